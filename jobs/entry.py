"""Shared entrypoint plumbing: logging, and user errors as one line with exit code 2.

Log level: ``evalctl --log-level LEVEL`` or EVALCLUSTER_LOG_LEVEL (default WARNING:
quiet). ``evalctl --debug`` or EVALCLUSTER_DEBUG=1 prints the full traceback (with
its causes) above a user error's one line.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable

import typer
from rich.console import Console
from rich.text import Text

from cluster.errors import UserError
from cluster.runtime import leave_ray

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
console = Console(highlight=False)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    err_console.print(Text.assemble(("error: ", "bold red"), message))
    return typer.Exit(code)


def configure_logging(level: str | None = None) -> None:
    """One stderr handler for our loggers (and Ray's Python loggers) at ``level``.

    Ray Data's console progress follows this level too (cluster/runtime.py); its full
    logs stay in Ray's session directory.
    """
    level = (level or os.environ.get("EVALCLUSTER_LOG_LEVEL") or "WARNING").upper()
    if level not in LEVELS:
        raise UserError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    os.environ["EVALCLUSTER_LOG_LEVEL"] = level  # child processes and submitted jobs inherit it
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger().setLevel(level)


def debug_enabled() -> bool:
    return os.environ.get("EVALCLUSTER_DEBUG", "").lower() in ("1", "true", "yes")


def run(app: typer.Typer | Callable, argv: list[str] | None = None, prog: str = "evalctl") -> None:
    """Run a typer app or command function as a program: no tracebacks for user errors."""
    if not isinstance(app, typer.Typer):
        fn, app = app, typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        app.command()(fn)
    try:
        configure_logging()
        code = typer.main.get_command(app).main(args=argv, prog_name=prog, standalone_mode=False)
    except UserError as exc:
        _user_error(str(exc), exc, getattr(exc, "exit_code", 2))
    except typer.TyperException as exc:  # click's usage errors (typer vendors click): one line too
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx else ""
        _user_error(f"{exc.format_message()}{hint}", exc, getattr(exc, "exit_code", 2))
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    finally:
        leave_ray()
    if code == 130:
        err_console.print("interrupted")
    sys.exit(code if isinstance(code, int) else 0)


def _user_error(message: str, exc: BaseException, code: int = 2) -> None:
    if debug_enabled():
        traceback.print_exception(exc)
    err_console.print(Text.assemble(("error: ", "bold red"), message))
    sys.exit(code)
