"""The docs against the tree: the README's Layout names every package folder and only folders that
exist, the README stays a guide (under 500 lines), every relative link in README.md and docs/*.md
points at a file (and a heading) that exists, and every `$ evalctl ...` line they show is a command
with those options."""

import fnmatch
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 500
# A Layout line is "<indent><folder>/  <what it holds>"; two spaces of indent per level.
FOLDER_LINE = re.compile(r"^(?P<indent> *)(?P<name>[A-Za-z0-9_.-]+)/(?:\s|$)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def layout_block() -> str:
    text = README.read_text()
    assert "\n## Layout\n" in text, "README.md has no '## Layout' section"
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```")
    assert len(blocks) >= 3, "the Layout section holds its tree in a ``` block"
    return blocks[1]


def layout_folders(block: str) -> list[str]:
    """Each folder line's path from the root, nesting read from the indentation."""
    stack: list[tuple[int, str]] = []
    folders = []
    for line in block.splitlines():
        m = FOLDER_LINE.match(line)
        if not m:
            continue
        depth = len(m["indent"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        path = "/".join([*(name for _, name in stack), m["name"]])
        stack.append((depth, m["name"]))
        folders.append(path)
    return folders


def ignored_names() -> list[str]:
    """The top-level names .gitignore leaves out (`.venv`, `/data/`, `*.egg-info/`, ...)."""
    lines = (ROOT / ".gitignore").read_text().splitlines() if (ROOT / ".gitignore").exists() else []
    return [ln.strip().strip("/") for ln in lines if ln.strip() and not ln.startswith("#")]


def top_level_folders() -> set[str]:
    ignore = ignored_names()
    return {
        p.name
        for p in ROOT.iterdir()
        if p.is_dir() and not p.name.startswith(".") and not any(fnmatch.fnmatch(p.name, g) for g in ignore)
    }


def package_folders() -> set[str]:
    """Every folder under cluster/ that is a Python package (holds an __init__.py)."""
    return {
        str(init.parent.relative_to(ROOT))
        for init in (ROOT / "cluster").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


def test_layout_parser_reads_nesting():
    block = "cluster/  core\n  stats/  numbers\n    deep/  x\n  ray/  plumbing; not/a/folder\njobs/  cli\n"
    assert layout_folders(block) == ["cluster", "cluster/stats", "cluster/stats/deep", "cluster/ray", "jobs"]


def test_every_folder_the_layout_names_exists():
    missing = [f for f in layout_folders(layout_block()) if not (ROOT / f).is_dir()]
    assert not missing, f"README Layout names folders that do not exist: {missing}"


def test_layout_names_every_package_under_cluster_and_every_top_level_folder():
    named = set(layout_folders(layout_block()))
    unnamed = sorted((package_folders() | top_level_folders()) - named)
    assert not unnamed, f"add these folders to README.md's Layout (one line each, what they hold): {unnamed}"


def test_readme_stays_a_guide():
    lines = len(README.read_text().splitlines())
    assert lines < MAX_README_LINES, (
        f"README.md has {lines} lines (limit {MAX_README_LINES}): keep the user's guide short and move "
        "measurements to docs/benchmarks.md, design notes to docs/design.md"
    )


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped, spaces -> '-'."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        base = slug(line.lstrip("#"))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold no links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_slug_and_link_reading():
    assert (
        slug("7. Gating a release: threshold metrics, gates") == "7-gating-a-release-threshold-metrics-gates"
    )
    assert slug("Cost of the threshold metrics and `--auto-slices`") == (
        "cost-of-the-threshold-metrics-and---auto-slices"
    )
    assert slug("metrics.json (version 2)") == "metricsjson-version-2"
    assert slug("The team's record") == "the-teams-record"
    assert relative_links(README)  # the reader finds the README's links at all


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_an_existing_file_and_heading(doc):
    broken = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: {broken}"


SUBCOMMANDS = {
    "data": {"sample", "check"},
    "sweep": {"report", "resume"},
    "serve": {"deploy", "status", "stop"},
    "runs": {"list", "show", "fail", "record"},
    "models": {"list", "alias", "unalias", "register"},
    "db": {"status", "upgrade"},
    "cluster": {"up", "down", "status"},
    "jobs": {"list", "status", "logs", "stop"},
}


def documented_commands() -> list[tuple[str, str]]:
    """(doc, command line) for every `$ evalctl ...` line of a console block in the README and docs/."""
    found = []
    for doc in [README, *DOCS]:
        for block in re.findall(r"```console\n(.*?)```", doc.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                if not line.startswith("$ evalctl "):
                    continue
                for part in line[2:].split("  #", 1)[0].split(";"):  # "a; b" shows two commands
                    part = part.split("|", 1)[0].strip()  # "jobs list | status ID": alternatives
                    if part.startswith("evalctl "):
                        found.append((str(doc.relative_to(ROOT)), part))
    return found


@pytest.mark.parametrize(("doc", "line"), documented_commands(), ids=lambda v: v[:60])
def test_every_documented_command_exists_with_its_options(doc, line):
    from typer.testing import CliRunner

    from jobs.cli import app

    args = shlex.split(line)[1:]
    path = args[:2] if args[0] in SUBCOMMANDS and args[1:2] and args[1] in SUBCOMMANDS[args[0]] else args[:1]
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, f"{doc}: evalctl {' '.join(path)}: {result.output}"
    for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line):
        assert re.search(rf"{re.escape(flag)}\b", result.output), (
            f"{doc}: evalctl {' '.join(path)} has no {flag}"
        )
