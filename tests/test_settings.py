"""Every EVALCLUSTER_* variable has one home (cluster/specs/settings.py) and one line in the docs."""

import ast
import re
from pathlib import Path

import pytest

from cluster.errors import UserError
from cluster.specs.settings import API_KEY_VARIABLES, PREFIX, UI_TOKEN_VARIABLES, Settings, settings

ROOT = Path(__file__).resolve().parent.parent
CODE = [
    p for d in ("cluster", "jobs", "serve", "ui") if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*.py")
]
KNOWN = (
    {PREFIX + name.upper() for name in Settings.model_fields}
    | set(API_KEY_VARIABLES)
    | set(UI_TOKEN_VARIABLES)
)


def test_every_variable_named_in_the_code_or_docs_is_a_setting():
    texts = [p.read_text() for p in CODE] + [(ROOT / "README.md").read_text()]
    texts += [p.read_text() for p in (ROOT / "docs").glob("*.md")]
    named = {m for t in texts for m in re.findall(r"EVALCLUSTER_[A-Z0-9_]*[A-Z0-9]", t)}
    assert named - KNOWN == set(), "add these to cluster/specs/settings.py"


def test_only_the_settings_module_reads_them():
    """No os.environ.get("EVALCLUSTER_...") / os.getenv / os.environ["EVALCLUSTER_..."] read elsewhere."""
    offenders = []
    for p in CODE:
        if p.name == "settings.py":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            key = None
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("get", "getenv"):
                key = node.args[0] if node.args else None
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
                key = node.slice
            if isinstance(key, ast.Constant) and str(key.value).startswith(PREFIX):
                offenders.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_the_docs_table_lists_every_setting_with_its_default():
    doc = (ROOT / "docs" / "contracts.md").read_text()
    for name, field in Settings.model_fields.items():
        default = "" if field.default is None else f"`{field.default}`"
        assert f"| `{PREFIX}{name.upper()}` | {default} | {field.description} |" in doc, name


def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.setenv("EVALCLUSTER_WARM_MAX_MODELS", "many")
    with pytest.raises(
        UserError, match=r"^EVALCLUSTER_WARM_MAX_MODELS='many': input should be a valid integer"
    ):
        settings()
    monkeypatch.delenv("EVALCLUSTER_WARM_MAX_MODELS")
    monkeypatch.setenv("EVALCLUSTER_LOG_LEVEL", "info")
    assert settings().log_level == "INFO"  # any case
    monkeypatch.setenv("EVALCLUSTER_HOME", "~/elsewhere")
    assert settings().home == Path("~/elsewhere")


def test_an_empty_variable_is_unset(monkeypatch):
    """A submitted job's environment blanks EVALCLUSTER_DB / _DB_FILE to mean "none" (jobs/job_env.py)."""
    monkeypatch.setenv("EVALCLUSTER_DB_FILE", "")
    monkeypatch.setenv("EVALCLUSTER_DB", "")
    s = settings()
    assert s.db_file is None and s.db is None
