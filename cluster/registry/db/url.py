"""Which database holds the team's record, and how to show it without its password.

Default: the SQLite file ``registry.db`` under ``EVALCLUSTER_HOME``. A shared
PostgreSQL registry is selected by ``EVALCLUSTER_DB=postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB``
or by ``EVALCLUSTER_DB_FILE``, a file holding that URL (a mounted Kubernetes Secret).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from cluster.errors import UserError
from cluster.specs.settings import settings

ENV_URL = "EVALCLUSTER_DB"
ENV_URL_FILE = "EVALCLUSTER_DB_FILE"
DB_FILE = "registry.db"
EXPECTED = "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
# postgres:// and postgresql:// are common spellings of the same URL; psycopg 3 is the driver we ship.
PG_SCHEMES = ("postgresql+psycopg", "postgresql", "postgres")
# user:password@ in any URL-like text, for messages where the password is not known (a URL that
# does not parse): everything between the user's colon and the last @ before the host is masked.
_USERINFO = re.compile(r"(://[^:/@\s]*:)[^\s]*@")


@dataclass(frozen=True)
class Target:
    """A registry database: its URL (with the password: never print it), backend and SQLite file."""

    url: URL
    backend: str  # "sqlite" | "postgresql"
    path: Path | None = None  # the SQLite file

    @property
    def display(self) -> str:
        """The SQLite path, or the URL with its password shown as ``***``."""
        return str(self.path) if self.path else self.url.render_as_string(hide_password=True)

    def scrub(self, text: str) -> str:
        """``text`` with this target's password (raw or URL-quoted) replaced by ``***``."""
        return scrub(text, self.url.password)


def scrub(text: str, password: str | None = None) -> str:
    """Remove a password from ``text``: the known one in every spelling, and any ``user:...@`` in URLs."""
    if password:
        for spelling in {password, quote(password, safe=""), quote_plus(password)}:
            text = text.replace(spelling, "***")
    return _USERINFO.sub(r"\1***@", text)


class ScrubbedError(Exception):
    """Stands in for a driver exception whose text carried a secret (kept as the cause, scrubbed)."""


def scrubbed(exc: BaseException, password: str | None = None) -> BaseException:
    """``exc`` itself when its text is clean, else a ScrubbedError with the cleaned text."""
    text = str(exc)
    clean = scrub(text, password)
    return exc if clean == text else ScrubbedError(f"{type(exc).__name__}: {clean}")


def resolve(home: Path) -> Target:
    """The configured registry database for ``home`` (EVALCLUSTER_HOME)."""
    raw, where = configured_url()
    if raw is None:
        path = Path(home) / DB_FILE
        return Target(URL.create("sqlite", database=str(path)), "sqlite", path)
    return Target(parse_url(raw, where), "postgresql")


def configured_url() -> tuple[str | None, str]:
    """(URL text, where it came from) from EVALCLUSTER_DB / EVALCLUSTER_DB_FILE; (None, "") if unset."""
    s = settings()
    url = s.db.get_secret_value().strip() if s.db else ""
    url_file = str(s.db_file).strip() if s.db_file else ""
    if url and url_file:
        raise UserError(f"both {ENV_URL} and {ENV_URL_FILE} are set; set one of them")
    if url:
        return url, ENV_URL
    if not url_file:
        return None, ""
    where = f"{ENV_URL_FILE}={url_file}"
    try:
        text = Path(url_file).expanduser().read_text().strip()
    except OSError as exc:
        raise UserError(f"cannot read {where}: {exc.strerror or exc}; it should hold {EXPECTED}") from exc
    if not text:
        raise UserError(f"{where} is empty; it should hold {EXPECTED}")
    return text, f"the URL in {where}"


def parse_url(raw: str, where: str) -> URL:
    """A PostgreSQL URL for psycopg 3, or one clear UserError (which never shows the password)."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError) as exc:
        raise UserError(f"{where} is not a database URL; expected {EXPECTED}") from scrubbed(exc)
    if url.drivername not in PG_SCHEMES:
        raise UserError(
            f'{where}: unsupported scheme "{url.drivername}" in {url.render_as_string(hide_password=True)};'
            f" expected {EXPECTED} (unset it for the SQLite registry under EVALCLUSTER_HOME)"
        )
    if not url.database:
        raise UserError(f"{where} names no database: expected {EXPECTED}")
    return url.set(drivername="postgresql+psycopg")
