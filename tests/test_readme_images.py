"""The README's Images section, as written: every command exists with every option it shows."""

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
GROUPS = {"data": {"sample"}, "sweep": {"report", "resume"}, "serve": {"deploy", "status", "stop"}}


def images_section_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### 8. Images", 1)[1].split("\n## ", 1)[0]
    block = section.split("```console", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        if line.startswith("$ evalctl "):
            commands.append(shlex.split(line[2:].split("  #", 1)[0])[1:])
    return commands


def command_path(args: list[str]) -> list[str]:
    path = [args[0]]
    if args[0] in GROUPS and len(args) > 1 and args[1] in GROUPS[args[0]]:
        path.append(args[1])
    return path


@pytest.mark.parametrize("args", images_section_commands(), ids=lambda a: " ".join(a[:2]))
def test_readme_image_command_exists_with_its_options(args):
    from jobs.cli import app

    path = command_path(args)
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for flag in (a for a in args if a.startswith("--")):
        assert re.search(rf"{re.escape(flag)}\b", result.output), f"{' '.join(path)} has no {flag}"


def test_readme_lists_the_image_commands_of_the_issue():
    shown = {" ".join(command_path(a)) for a in images_section_commands()}
    assert {"data sample", "sweep", "sweep report", "evaluate", "serve deploy", "query"} <= shown
