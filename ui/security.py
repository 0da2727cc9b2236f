"""Who may see and who may change: the access token, the write token, CSRF, headers, secrets.

- Access: with an access token configured every path but ``/healthz`` and the login form
  needs it, as ``Authorization: Bearer TOKEN`` or as the session cookie the login form sets
  (an HMAC of a fixed label under the token's digest: it proves the token was typed, and
  holds nothing that gives the token back). Off 127.0.0.1 the server refuses to start
  without one (ui/server.py).
- Writes (moving an alias) need the write token typed into the form, and a CSRF token: a
  random value in a ``SameSite=Strict`` cookie that the form must repeat (double submit),
  and a cross-site ``Sec-Fetch-Site`` or foreign ``Origin`` is refused before that.
- Tokens reach the app only as SHA-256 digests (cluster/apikey.py), compared in constant time.
- Every response carries a Content-Security-Policy without inline scripts, and every page is
  scrubbed of the secrets this process knows (the database password, S3 keys, the tokens).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from dataclasses import dataclass, field

from cluster.apikey import api_key, digest
from cluster.errors import UserError
from cluster.registry.db.url import configured_url, parse_url

SESSION_COOKIE = "evalcluster_ui_session"
CSRF_COOKIE = "evalcluster_ui_csrf"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
REPORT_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"  # a run's report.html
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # (no-referrer would make a browser send "Origin: null" with forms)
    "X-Frame-Options": "SAMEORIGIN",
    "Cache-Control": "no-store",
}
AWS_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class Guard:
    """The app's tokens as digests (None: not required / writes off) and the secrets to scrub."""

    access_sha256: str | None = None
    write_sha256: str | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def session_value(self) -> str:
        return hmac.new(
            bytes.fromhex(self.access_sha256 or ""), b"evalcluster-ui-session-v1", "sha256"
        ).hexdigest()

    def allows(self, authorization: str | None, session: str | None) -> bool:
        """Whether a request may read: no access token configured, or it shows the token."""
        if self.access_sha256 is None:
            return True
        if authorization and authorization.startswith("Bearer "):
            return matches(self.access_sha256, authorization[7:].strip())
        return bool(session) and hmac.compare_digest(session, self.session_value())

    def may_write(self, token: str | None) -> bool:
        return self.write_sha256 is not None and matches(self.write_sha256, token)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def matches(sha256: str, token: str | None) -> bool:
    """Constant-time comparison of a token with a digest."""
    return bool(token) and hmac.compare_digest(digest(token), sha256)


def guard_from_env(token_env: str, write_env: str) -> Guard:
    """The tokens from their variables (or ``_FILE``s) as digests, and this process's secrets."""
    access, write = api_key(token_env), api_key(write_env)
    return Guard(
        digest(access) if access else None,
        digest(write) if write else None,
        known_secrets(access, write),
    )


def known_secrets(*extra: str | None) -> tuple[str, ...]:
    """Secret values this process holds: the registry database's password, S3 and API keys, ``extra``."""
    found = [os.environ.get(v, "").strip() for v in AWS_SECRETS] + [api_key() or ""]
    raw, where = configured_url()
    if raw:
        with contextlib.suppress(UserError):  # a bad URL is reported where the registry is opened
            found.append(parse_url(raw, where).password or "")
    return tuple(sorted({s for s in (*found, *extra) if s and len(s) >= 4}, key=len, reverse=True))


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def same_origin(headers) -> bool:
    """False for a request a browser marks as cross-site, or whose Origin is not this host."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = headers.get("host", "")
    return origin.split("://", 1)[-1] == host
