"""Installs are reproducible: `make setup` installs with constraints.txt, which pins every package
the project asks for (torch aside: the Makefile pins its CPU build), and what runs the tests is
what it pins."""

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, ver = line.partition("==")
            out[canonicalize_name(name)] = ver.strip()
    return out


def wanted() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(re.sub(r"\s+#.*", "", r)) for r in reqs]


def test_every_requirement_is_pinned_and_installed_at_its_pin():
    pinned = pins()
    for req in wanted():
        name = canonicalize_name(req.name)
        if name == "torch":
            continue
        assert name in pinned, f"{req.name} is not in constraints.txt: run `make lock`"
        assert req.specifier.contains(pinned[name], prereleases=True), (req, pinned[name])
        try:
            assert version(req.name) == pinned[name], f"{req.name} {version(req.name)} != pin {pinned[name]}"
        except PackageNotFoundError as exc:
            raise AssertionError(f"{req.name} is pinned but not installed") from exc


def test_the_makefile_installs_with_the_constraints():
    make = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt -e '.[dev]'" in make and "$(STAMP): pyproject.toml constraints.txt" in make
