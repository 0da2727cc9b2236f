"""Shared entrypoint plumbing: user errors become one line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer
from rich.console import Console
from rich.text import Text

from cluster.errors import UserError

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
console = Console(highlight=False)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    err_console.print(Text.assemble(("error: ", "bold red"), message))
    return typer.Exit(code)


def run(app: typer.Typer | Callable, argv: list[str] | None = None, prog: str = "evalctl") -> None:
    """Run a typer app or command function as a program: no tracebacks for user errors."""
    if not isinstance(app, typer.Typer):
        fn, app = app, typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        app.command()(fn)
    try:
        app(args=argv, prog_name=prog, standalone_mode=True)
    except UserError as exc:
        err_console.print(Text.assemble(("error: ", "bold red"), str(exc)))
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
