"""The SQLite registry file: upgraded in place from main's registry.db; damaged files refused untouched."""

import re
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from cluster.errors import UserError
from cluster.registry.db.migrate import BASELINE_COLUMNS, MIGRATIONS, REVISIONS
from cluster.registry.db.schema import VERSION_TABLE
from cluster.registry.heartbeat import stale_reason
from cluster.registry.record import Registry
from tests.registry_helpers import DAMAGE, MAIN_DB, snapshot


def rows_of(db: Path) -> dict[str, list[dict]]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return {t: [dict(r) for r in con.execute(f"SELECT * FROM {t} ORDER BY 1")] for t in BASELINE_COLUMNS}
    finally:
        con.close()


def test_revisions_constant_matches_the_alembic_scripts():
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(MIGRATIONS))
    assert tuple(reversed([s.revision for s in scripts.walk_revisions()])) == REVISIONS
    assert scripts.get_current_head() == REVISIONS[-1]


def test_registry_db_from_main_is_upgraded_in_place_without_losing_a_row(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    db = home / "registry.db"
    shutil.copy(MAIN_DB, db)
    before = rows_of(db)
    inode = db.stat().st_ino
    reg = Registry(home)
    assert len(reg.list_runs()) == 4  # opening upgrades it
    after = rows_of(db)
    for table, old_rows in before.items():
        assert [{k: r[k] for k in BASELINE_COLUMNS[table]} for r in after[table]] == old_rows, table
    assert all(r["host"] is None and r["heartbeat_at"] is None for r in after["runs"])
    assert db.stat().st_ino == inode  # upgraded in place, not replaced
    with sqlite3.connect(db) as con:
        assert con.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [("0006",)]
    # The old records obey the new rules: finished ones are final, the abandoned one is stale.
    with pytest.raises(IntegrityError, match="immutable"), reg.database.write() as conn:
        conn.execute(sa.text("UPDATE runs SET metrics = NULL WHERE id = 'evaluate-20261128-100000-aaaaaa'"))
    abandoned = reg.get_run("evaluate-20261128-110000-cccccc")
    assert stale_reason(abandoned, now=datetime(2100, 1, 1, tzinfo=timezone.utc)).startswith(
        "no heartbeat for"
    )
    assert reg.resolve_model("best")["id"] == "m-20261128-090500-111111"
    assert reg.remove_alias("[/x]") == "m-20261128-091000-222222"  # an alias no longer valid can be removed


def test_an_upgrade_that_cannot_apply_leaves_the_file_as_it_was(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    db = home / "registry.db"
    shutil.copy(MAIN_DB, db)
    with sqlite3.connect(db) as con:  # a finished run without a finish time breaks ck_runs_finished_at
        con.execute("UPDATE runs SET finished_at = NULL WHERE id = 'evaluate-20261128-100000-aaaaaa'")
    content = db.read_bytes()
    with pytest.raises(
        UserError,
        match=r"cannot upgrade registry .* from revision unversioned to 0006, left as it was:.*CHECK",
    ):
        Registry(home).list_runs()
    assert db.read_bytes() == content


def test_a_new_registry_appears_complete(tmp_path):
    home = tmp_path / "home"
    Registry(home).list_runs()
    names = {p.name for p in home.iterdir()}
    assert (
        {"registry.db", "registry.lock"}
        <= names
        <= {"registry.db", "registry.db-wal", "registry.db-shm", "registry.lock"}
    )
    with sqlite3.connect(home / "registry.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert con.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [("0006",)]


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_registry_is_one_clear_error_and_left_untouched(tmp_path, damage):
    home = tmp_path / "home"
    home.mkdir()
    db = home / "registry.db"
    make, fragment = DAMAGE[damage]
    make(db)
    content = snapshot(db)
    with pytest.raises(UserError, match=re.escape(fragment)) as err:
        Registry(home).list_runs()
    assert str(db) in str(err.value) and "\n" not in str(err.value)
    assert snapshot(db) == content
