"""Ray's private modules are reached through one file, checked against the installed Ray."""

import ast
from pathlib import Path

import pytest

from cluster.errors import UserError
from cluster.ray import compat

ROOT = Path(__file__).resolve().parent.parent


def private_imports(path: Path) -> list[str]:
    """Imports of a private Ray module or name (a path component or name starting with _)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ray":
            names = [node.module, *(a.name for a in node.names)]
            if any(part.startswith("_") for n in names for part in n.split(".")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
    return found


def test_only_compat_imports_rays_private_modules():
    code = [p for d in ("cluster", "jobs", "serve") for p in (ROOT / d).rglob("*.py")]
    offenders = [f for p in code if p.name != "compat.py" for f in private_imports(p)]
    assert not offenders, offenders
    assert private_imports(ROOT / "cluster" / "ray" / "compat.py")  # the boundary holds them


def test_another_ray_release_is_one_clear_line(monkeypatch):
    compat.check_ray_version.cache_clear()
    monkeypatch.setattr(compat, "version", lambda _: "2.61.0")
    with pytest.raises(UserError, match=r"Ray 2.61.0 is installed; evalcluster supports Ray 2.60.x"):
        compat.check_ray_version()
    compat.check_ray_version.cache_clear()
    monkeypatch.undo()
    assert compat.check_ray_version().startswith("2.60.")
