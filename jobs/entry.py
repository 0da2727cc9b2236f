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
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.text import Text

from cluster.errors import UserError
from cluster.specs.settings import settings

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
console = Console(highlight=False)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    err_console.print(Text.assemble(("error: ", "bold red"), message))
    return typer.Exit(code)


def configure_logging(level: str | None = None) -> None:
    """One stderr handler for our loggers (and Ray's Python loggers) at ``level``.

    Ray Data's console progress follows this level too (cluster/ray/runtime.py); its full
    logs stay in Ray's session directory.
    """
    level = (level or settings().log_level).upper()
    if level not in LEVELS:
        raise UserError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    os.environ["EVALCLUSTER_LOG_LEVEL"] = level  # child processes and submitted jobs inherit it
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger().setLevel(level)


def debug_enabled() -> bool:
    try:
        return settings().debug
    except UserError:  # asked while reporting another error: a bad variable must not hide it
        return False


def run(app: typer.Typer | Callable, argv: list[str] | None = None, prog: str = "evalctl") -> None:
    """Run a typer app or command function as a program: no tracebacks for user errors."""
    if not isinstance(app, typer.Typer):
        fn, app = app, typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        app.command()(fn)
    try:
        configure_logging()
        with ray_of_this_command():
            code = typer.main.get_command(app).main(args=argv, prog_name=prog, standalone_mode=False)
    except UserError as exc:
        _user_error(str(exc), exc, getattr(exc, "exit_code", 2))
    except typer.TyperException as exc:  # click's usage errors (typer vendors click): one line too
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx else ""
        _user_error(f"{exc.format_message()}{hint}", exc, getattr(exc, "exit_code", 2))
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    if code == 130:
        err_console.print("interrupted")
    sys.exit(code if isinstance(code, int) else 0)


@contextmanager
def ray_of_this_command():
    """Leave, when the command ends, a Ray it joined (a Ray this process had before, e.g. a
    caller's own, is left alone), rather than at exit: Ray's exit hook sleeps 0.5 s for log lines.

    An embedded Ray's autoscaler monitor is killed first: stopped after the GCS (Ray's order,
    ray/_private/node.py kill_all_processes), it reports its end to that dead GCS and is
    SIGKILLed only after a 1 s grace (1.01 s of a 1.35 s shutdown, measured). It owns nothing.
    """
    had_ray = _ray_up()
    try:
        yield
    finally:
        if not had_ray and _ray_up():
            import ray

            from cluster.ray.compat import kill_embedded_monitor

            kill_embedded_monitor()  # only a Ray started here has one
            ray.shutdown()


def _ray_up() -> bool:
    ray = sys.modules.get("ray")  # never imported just to ask
    return ray is not None and ray.is_initialized()


def _user_error(message: str, exc: BaseException, code: int = 2) -> None:
    if debug_enabled():
        traceback.print_exception(exc)
    err_console.print(Text.assemble(("error: ", "bold red"), message))
    sys.exit(code)
