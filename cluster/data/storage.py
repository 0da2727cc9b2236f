"""Locations: a local path or a URI (``s3://``, ``gs://``, ``file://``) as a pyarrow filesystem and a path.

The one place that turns a location into ``(filesystem, path)``: data files (scan,
shard planning, shard reads in Ray tasks, the sweep's splits), run artifacts and
model directories all go through :func:`resolve`.

S3 (and S3-compatible stores: MinIO, Ceph, moto) is configured by the standard
AWS variables of the process that touches the data:

- ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``: the endpoint. pyarrow 26's
  ``S3FileSystem()`` does not read these by itself (measured: it went to
  amazonaws.com; only ``FileSystem.from_uri`` honours ``AWS_ENDPOINT_URL``), so the
  endpoint is passed as ``endpoint_override``, with path-style addressing;
- ``AWS_REGION`` / ``AWS_DEFAULT_REGION``: the region (without an endpoint and a
  region, the bucket's region is looked up, as ``from_uri`` does);
- credentials: the AWS SDK's own chain (``AWS_ACCESS_KEY_ID`` +
  ``AWS_SECRET_ACCESS_KEY`` [+ ``AWS_SESSION_TOKEN``], ``AWS_PROFILE`` /
  ``AWS_SHARED_CREDENTIALS_FILE``, web identity, instance roles). Credentials are
  never accepted inside a URI (``s3://KEY:SECRET@bucket``): a URI is recorded and
  printed, a secret must not be.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from cluster.errors import UserError

ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")
CREDENTIAL_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
DENIED = ("access_denied", "accessdenied", "invalid_access_key", "signature", "forbidden")
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)


def is_uri(location: str) -> bool:
    """True for ``scheme://...`` (``file://`` included)."""
    return "://" in str(location)


def is_remote(location: str) -> bool:
    """True for a URI that is not on this machine's disk (anything but a plain path or ``file://``)."""
    return is_uri(location) and not str(location).startswith("file://")


def check_location(location: str, what: str = "location") -> str:
    """``location`` if it carries no credentials; else a UserError that does not repeat them."""
    if is_uri(location) and _USERINFO.match(str(location)):
        scheme = str(location).split("://", 1)[0]
        raise UserError(
            f"{what} {scheme}://***@...: credentials inside a URI are refused (URIs are recorded and "
            "printed); set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE instead"
        )
    return location


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` for a local path (made absolute) or a URI.

    ``s3://bucket/key`` -> (an S3FileSystem configured from the AWS variables, ``bucket/key``).
    """
    location = str(location)
    if not is_uri(location):
        return pafs.LocalFileSystem(), str(Path(location).expanduser().absolute())
    check_location(location)
    scheme = location.split("://", 1)[0].lower()
    try:
        if scheme == "s3":
            rest = location.split("://", 1)[1].rstrip("/")
            return s3_filesystem(rest.split("/", 1)[0]), rest
        return pafs.FileSystem.from_uri(location)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
        raise storage_error(exc, location, "open") from exc


def s3_filesystem(bucket: str) -> pafs.S3FileSystem:
    """An S3FileSystem for ``bucket`` from this process's AWS variables (see the module docstring)."""
    endpoint = next((os.environ[v] for v in ENDPOINT_VARS if os.environ.get(v)), None)
    region = next((os.environ[v] for v in REGION_VARS if os.environ.get(v)), None)
    if endpoint is None and region is None:
        region = _bucket_region(bucket)
    return _s3(endpoint, region, _credentials_key())


def _credentials_key() -> tuple:
    """What the SDK's credential chain reads from the environment: a new S3 client when it changes."""
    return tuple(os.environ.get(v) for v in (*CREDENTIAL_VARS, "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))


@functools.lru_cache(maxsize=8)
def _s3(endpoint: str | None, region: str | None, _credentials: tuple) -> pafs.S3FileSystem:
    kwargs: dict = {"region": region} if region else {}
    if endpoint:
        url = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs.update(endpoint_override=url.netloc, scheme=url.scheme or "https")
        kwargs["force_virtual_addressing"] = False  # path-style: what MinIO and friends expect
    return pafs.S3FileSystem(**kwargs)


@functools.lru_cache(maxsize=64)
def _bucket_region(bucket: str) -> str | None:
    try:
        return pafs.resolve_s3_region(bucket)
    except (OSError, ValueError):
        return None  # the request that follows names the problem


def join(location: str, *parts: str) -> str:
    """``location`` + ``/part/...``, for paths and URIs alike."""
    location = str(location)
    if not is_uri(location):
        return str(Path(location, *parts))
    return "/".join([location.rstrip("/"), *(p.strip("/") for p in parts)])


def as_uri(location: str, fs: pafs.FileSystem, path: str) -> str:
    """The location of ``path`` on ``fs``, written the way ``location`` was (URI or local path)."""
    if isinstance(fs, pafs.LocalFileSystem):
        return path
    return f"{str(location).split('://', 1)[0]}://{path}"


def shown_endpoint() -> str:
    endpoint = next((os.environ[v] for v in ENDPOINT_VARS if os.environ.get(v)), None)
    return f" at {endpoint}" if endpoint else ""


def has_credentials() -> bool:
    """Whether the environment offers the SDK any credentials (an instance role is not visible here)."""
    if any(os.environ.get(v) for v in CREDENTIAL_VARS):
        return True
    return (Path.home() / ".aws" / "credentials").is_file()


def storage_error(exc: BaseException, location: str, action: str) -> UserError:
    """One line for a failed storage operation: which location, what went wrong, what to do."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = text.lower()
    bucket = str(location).split("://", 1)[-1].split("/", 1)[0]
    if "no_such_bucket" in low or "nosuchbucket" in low or "bucket does not exist" in low:
        return UserError(f"cannot {action} {location}: bucket {bucket} does not exist{shown_endpoint()}")
    no_credentials = str(location).startswith("s3://") and not has_credentials()
    if no_credentials or any(s in low for s in DENIED):
        why = (
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            if no_credentials
            else "access denied for these credentials (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
        )
        return UserError(f"cannot {action} {location}: {why}")
    if "network_connection" in low or "curl" in low or "could not resolve" in low:
        return UserError(f"cannot {action} {location}: S3 endpoint{shown_endpoint()} unreachable ({text})")
    return UserError(f"cannot {action} {location}: {text}")
