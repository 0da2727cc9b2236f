"""The dashboard served by uvicorn on a free port of 127.0.0.1, in a thread of this process
(tests, the screenshot script): the same app `evalctl ui` serves."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from cluster.apikey import digest
from tests.pg import free_port
from ui.app import create_app
from ui.security import Guard, known_secrets


@contextmanager
def running_dashboard(
    access: str | None = None, write: str | None = None, page_size: int = 50
) -> Iterator[str]:
    """Yields the dashboard's base URL (tokens: the access and write tokens, None = not set)."""

    guard = Guard(
        digest(access) if access else None,
        digest(write) if write else None,
        known_secrets(access, write),
    )
    app = create_app(guard, page_size)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        app.state.ctx.registry.close()
