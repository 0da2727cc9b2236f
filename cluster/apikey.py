"""The scorer's optional API key: read by clients, and passed to servers only as its SHA-256 digest.

The key lives in $EVALCLUSTER_API_KEY (or a file named by $EVALCLUSTER_API_KEY_FILE); a
process that only forwards auth (a submitted deploy job) gets the digest in
$EVALCLUSTER_API_KEY_SHA256. The key itself never enters a spec, an argument or a log.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

DEFAULT_ENV = "EVALCLUSTER_API_KEY"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def api_key(env_name: str = DEFAULT_ENV) -> str | None:
    """The key from $ENV_NAME, or from the file named by $ENV_NAME_FILE; None when neither is set."""
    key = os.environ.get(env_name, "").strip()
    path = os.environ.get(f"{env_name}_FILE")
    if not key and path and Path(path).is_file():
        key = Path(path).read_text().strip()
    return key or None


def digest(key: str) -> str:
    """The hex SHA-256 of a key (what servers compare against)."""
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_digest(env_name: str = DEFAULT_ENV) -> str | None:
    """SHA-256 of the key (see :func:`api_key`), else a forwarded $ENV_NAME_SHA256; None = no key."""
    key = api_key(env_name)
    if key:
        return digest(key)
    forwarded = os.environ.get(f"{env_name}_SHA256", "").strip().lower()
    return forwarded if _SHA256.match(forwarded) else None


def digest_env(env_name: str = DEFAULT_ENV) -> dict[str, str]:
    """Env vars that forward this shell's key, as a digest only, to another process ({} if no key)."""
    value = api_key_digest(env_name)
    return {f"{env_name}_SHA256": value} if value else {}
