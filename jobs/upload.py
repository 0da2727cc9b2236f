"""What a submitted job uploads: an allow-list, never the whole project directory.

The job's working dir is a fresh staging directory holding only the project's
packages (cluster/, jobs/, serve/), pyproject.toml, and the local files the spec
names (data, model directories inside the project, for a remote cluster).
Secret-shaped files (.env*, keys, tokens, credentials, database and cloud CLI configs,
kubeconfig, registry databases) are left out even from those, and the command names
each file it left out.
"""

from __future__ import annotations

import fnmatch
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cluster.errors import UserError

log = logging.getLogger(__name__)
PACKAGES = ("cluster", "jobs", "serve")
TOP_FILES = ("pyproject.toml",)
# Matched (case-insensitively) against every component of a path: never uploaded.
SECRET_PATTERNS = (
    ".env",
    ".env.*",
    "*.env",
    ".ray",
    ".aws",
    ".ssh",
    ".gnupg",
    ".docker",
    ".kube",
    ".netrc",
    ".pgpass",
    ".pg_service.conf",
    ".my.cnf",
    "kubeconfig*",
    ".config",  # gcloud, gh, ... keep their credentials under ~/.config
    "gcloud",
    ".azure",
    "azure",
    ".boto",
    ".s3cfg",
    "rclone.conf",
    ".databrickscfg",
    ".oci",
    ".npmrc",
    ".pypirc",
    ".git-credentials",
    ".htpasswd",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.kdbx",
    "*.keystore",
    "*.jks",
    "*credential*",
    "*secret*",
    "*password*",
    "*passwd*",
    "*api_key*",
    "*apikey*",
    "*token*",
    "*service-account*",
    "*service_account*",
    "*.db",
    "*.db-*",
    "*.sqlite*",
    "registry.lock",
)
# Hugging Face's tokenizer files, in a model dir, match *token* and are no secrets.
NOT_SECRETS = ("tokenizer*", "special_tokens_map.json", "added_tokens.json")
SHOWN = 50  # secret-shaped files named in the summary line; past that, "(+N more)"
JUNK = ("__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", ".hypothesis", "*.egg-info", ".DS_Store")


def secret_shaped(rel: Path) -> bool:
    """True when any component of ``rel`` looks like a secret (see SECRET_PATTERNS).

    A Python source file's own name is not judged (``cluster/apikey.py`` is code that
    reads a key, not a key); the directories above it still are.
    """
    parts = rel.parts[:-1] if rel.suffix == ".py" else rel.parts
    if any(fnmatch.fnmatch(rel.name.lower(), pat) for pat in NOT_SECRETS):
        parts = parts[:-1]
    return any(fnmatch.fnmatch(part.lower(), pat) for part in parts for pat in SECRET_PATTERNS)


def _junk(rel: Path) -> bool:
    return any(fnmatch.fnmatch(part, pat) for part in rel.parts for pat in JUNK)


@dataclass
class Staged:
    """A staging directory ready to be a job's working_dir, and what was left out."""

    root: Path
    files: list[str] = field(default_factory=list)  # relative paths uploaded
    secrets: list[str] = field(default_factory=list)  # secret-shaped files left out of uploaded trees
    not_uploaded: list[str] = field(default_factory=list)  # top-level project entries not uploaded

    @property
    def bytes(self) -> int:
        return sum((self.root / f).stat().st_size for f in self.files)

    def summary(self) -> str:
        """One line: what goes up and what does not."""
        tops = sorted({f.split("/", 1)[0] for f in self.files})
        line = f"uploading {', '.join(tops)} ({len(self.files)} files, {self.bytes / 2**10:.0f} KiB)"
        if self.secrets:
            line += f"; left out as secret-shaped: {_some(self.secrets, SHOWN)}"
        if self.not_uploaded:
            line += f"; not uploaded: {_some(self.not_uploaded, 12)}"
        return line

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _some(names: list[str], shown: int) -> str:
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def stage(project: Path, named: list[Path] = ()) -> Staged:
    """Copy the allow-list of ``project`` (plus ``named`` paths inside it) into a staging dir."""
    for path in named:
        rel = Path(path).resolve().relative_to(project.resolve())
        if secret_shaped(rel):
            raise UserError(
                f"{rel} looks like a secret (a name such as .env, *.key, *secret*, *token*, *.db); "
                "it is never uploaded with a job: rename it, or pass it as a URI"
            )
    staged = Staged(Path(tempfile.mkdtemp(prefix="evalcluster-upload-")))
    try:
        for src in [project / p for p in (*PACKAGES, *TOP_FILES)] + [Path(p) for p in named]:
            if src.exists():
                _copy(src, project, staged)
        uploaded = {f.split("/", 1)[0] for f in staged.files}
        staged.not_uploaded = sorted(p.name for p in project.iterdir() if p.name not in uploaded)
    except BaseException:
        staged.cleanup()
        raise
    log.info("%s", staged.summary())
    return staged


def _copy(src: Path, project: Path, staged: Staged) -> None:
    rel_root = src.resolve().relative_to(project.resolve())
    paths = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    for path in paths:
        rel = rel_root / path.relative_to(src) if path != src else rel_root
        if _junk(rel):
            continue
        if secret_shaped(rel):
            staged.secrets.append(str(rel))
            continue
        _put(path, rel, staged)


def _put(src: Path, rel: Path, staged: Staged) -> None:
    if str(rel) in staged.files:
        return
    dest = staged.root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)
    staged.files.append(str(rel))


def check_size(staged: Staged, limit: int) -> None:
    """Refuse early, naming the biggest uploaded entries, when the upload exceeds ``limit`` bytes."""
    total = staged.bytes
    if total < limit:
        return
    sizes: dict[str, int] = {}
    for f in staged.files:
        top = "/".join(f.split("/")[:2])
        sizes[top] = sizes.get(top, 0) + (staged.root / f).stat().st_size
    biggest = ", ".join(
        f"{k} ({v / 2**20:.1f} MiB)" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    )
    raise UserError(
        f"the project is too large to upload as the job's working dir ({total / 2**20:.1f} MiB "
        f"> Ray's limit of {limit / 2**20:.1f} MiB); "
        f"biggest: {biggest}. Pass large data and models as URIs (s3://, gs://, a shared filesystem)"
    )
