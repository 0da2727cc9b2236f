"""Token authentication for Ray clients and the local Ray (re-exported by cluster/ray/runtime.py).

Token authentication stays on. Ray 2.60 clients with RAY_AUTH_MODE unset treat auth
as disabled, so before talking to a cluster we turn token mode on whenever a token
can be found the way Ray finds it (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token).
A token file we create is readable by its owner only (0600); a looser one is tightened.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from cluster.ray.compat import refresh_config

log = logging.getLogger(__name__)


def find_auth_token() -> str | None:
    """The cluster token as Ray's own clients find it, or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    for p in _token_files():
        if p.is_file() and p.read_text().strip():
            return p.read_text().strip()
    return None


def _token_files() -> list[Path]:
    """Where Ray looks for the token file, in order ($RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return ([Path(path).expanduser()] if path else []) + [Path.home() / ".ray" / "auth_token"]


def ensure_auth_token(create: bool = True) -> None:
    """Make sure the token file a new local Ray uses is private to its owner (0600).

    Creates it when no token is found and ``create`` (256 random bits in hex, as Ray's
    ``ray get-auth-token --generate`` makes them; Ray writes its file with the default
    umask, readable by every local user, so we write it ourselves); tightens an existing
    file that others can read, and says so.
    """
    if create and find_auth_token() is None:
        path = _token_files()[0]
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:  # O_EXCL: never overwrite a token another process wrote meanwhile
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    for path in _token_files():
        if path.is_file() and path.stat().st_mode & 0o077:
            old = oct(path.stat().st_mode & 0o777)[2:]
            try:
                path.chmod(0o600)
            except PermissionError:  # another user's file: say so, it is theirs to fix
                log.warning("%s is readable by others (mode %s) and not yours to tighten", path, old)
                continue
            log.warning("%s was readable by others (mode %s); it is now 0600 (owner only)", path, old)


def ensure_client_auth() -> None:
    """Turn on token mode for this process (and children) when a token exists, and tighten a token
    file others can read (as `evalctl cluster up` does), whichever cluster this process joins.

    Respects an explicit RAY_AUTH_MODE. Without a token the request is sent
    unauthenticated and the server's refusal is turned into a clear message
    by :func:`auth_hint`.
    """
    ensure_auth_token(create=False)
    if os.environ.get("RAY_AUTH_MODE") is None and find_auth_token():
        os.environ["RAY_AUTH_MODE"] = "token"
        # Ray caches its config (auth mode included) at first use: refresh it, as
        # Ray's own _enable_token_auth does, or this process keeps "disabled".
        refresh_config()


def auth_hint() -> str:
    return (
        "set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token, found on the "
        "head node in ~/.ray/auth_token or with `ray get-auth-token`"
    )
