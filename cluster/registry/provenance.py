"""Provenance of a run: who started it, the code that ran (git commit, dirty), package versions."""

from __future__ import annotations

import contextlib
import functools
import getpass
import importlib.metadata
import subprocess
import sys
from pathlib import Path


def default_owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str | None, int | None]:
    """(commit, dirty) of the code that runs, or (None, None) outside a git checkout.

    Read once per process: the code a process runs is the code it loaded.
    """
    root = Path(__file__).resolve().parents[2]  # the checkout cluster/ lives in
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None, None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip(), int(bool(dirty.stdout.strip()))
    except (OSError, subprocess.TimeoutExpired):
        return None, None


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    out = {}
    for pkg in ("ray", "torch", "transformers", "scikit-learn", "evalcluster"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    out["python"] = ".".join(map(str, sys.version_info[:3]))
    return tuple(out.items())


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape results (read once per process)."""
    return dict(_versions())
