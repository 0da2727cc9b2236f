"""A running run's progress, written with its heartbeat (schema revision 0006), on both backends."""

import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from cluster.registry.progress import describe, fraction, progress_value
from cluster.registry.record import Registry
from tests.test_registry import raw_sql, wait_for
from tests.test_registry_cli import cli  # noqa: F401 - the in-process CLI fixture


@pytest.mark.usefixtures("backend")
def test_progress_is_written_by_the_next_beat_and_kept_when_the_run_finishes(tmp_path):
    reg = Registry(tmp_path)
    run_id = reg.start_run("evaluate", {})
    assert reg.get_run(run_id)["progress"] is None
    reg.set_progress(run_id, 10, 100)
    reg.set_progress(run_id, 40, 100)  # only the newest is written
    assert reg.get_run(run_id)["progress"] is None  # memory only until a beat
    assert reg.beat(run_id)
    assert reg.get_run(run_id)["progress"] == {"done": 40, "total": 100, "unit": "rows"}
    reg.set_progress(run_id, 100, 100)
    reg.finish_run(run_id, metrics={"f1_macro": 0.5}, artifact_path=str(tmp_path))  # a scored finish
    run = reg.get_run(run_id)
    assert run["status"] == "finished" and run["progress"] == {"done": 100, "total": 100, "unit": "rows"}
    with pytest.raises(IntegrityError, match="immutable"):
        raw_sql(reg, "UPDATE runs SET progress = NULL WHERE id = :id", id=run_id)


@pytest.mark.usefixtures("backend")
def test_a_failed_run_keeps_how_far_it_got_and_an_unscored_finish_too(tmp_path):
    reg = Registry(tmp_path)
    with pytest.raises(RuntimeError), reg.run("sweep", {}) as failing:
        reg.set_progress(failing, 3, 8, "trials")
        raise RuntimeError("trial 4 broke")
    assert reg.get_run(failing)["progress"] == {"done": 3, "total": 8, "unit": "trials"}
    done = reg.start_run("pretrain", {})
    reg.set_progress(done, 7, None, "steps")
    reg.finish_run(done)
    assert reg.get_run(done)["progress"] == {"done": 7, "total": None, "unit": "steps"}


@pytest.mark.usefixtures("backend")
def test_the_heartbeat_thread_writes_progress_while_the_run_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALCLUSTER_HEARTBEAT_S", "0.05")
    reg = Registry(tmp_path)
    with reg.run("evaluate", {}) as run_id:
        reg.set_progress(run_id, 1234, 3725)
        wait_for(lambda: reg.get_run(run_id)["progress"] is not None, what="progress written")
        assert describe(reg.get_run(run_id)["progress"]) == "1,234 / 3,725 rows (33%)"
        reg.finish_run(run_id)


def test_a_beat_that_finds_the_database_away_keeps_the_progress_for_the_next(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALCLUSTER_HEARTBEAT_S", "0.05")
    reg = Registry(tmp_path)
    db = reg.database
    write_one, failures = db.write_one, []

    def away_twice(statement, params=None):
        if len(failures) < 2 and "progress" in (params or {}):  # the beats that carry progress
            failures.append(params)
            raise OperationalError("UPDATE runs", params, Exception("server closed the connection"))
        return write_one(statement, params)

    with reg.run("evaluate", {}) as run_id:  # its beats fail twice, then go through
        monkeypatch.setattr(db, "write_one", away_twice)
        reg.set_progress(run_id, 6, 9)
        wait_for(lambda: len(failures) == 2, what="two failed beats")
        wait_for(lambda: reg.get_run(run_id)["progress"] is not None, what="progress after the outage")
        assert reg.get_run(run_id)["progress"]["done"] == 6 and reg.get_run(run_id)["status"] == "running"
        reg.finish_run(run_id)
    assert [f["progress"] for f in failures] == ['{"done": 6, "total": 9, "unit": "rows"}'] * 2


@pytest.mark.usefixtures("backend")
def test_revision_0006_adds_the_column_to_a_registry_at_0005(tmp_path):
    from alembic import command
    from alembic.config import Config

    from cluster.registry.db.migrate import MIGRATIONS
    from cluster.registry.db.store import Database

    reg = Registry(tmp_path)
    run_id = reg.start_run("evaluate", {})
    with reg.database.write() as conn:  # back to 0005, as the previous evalcluster left it
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.downgrade(config, "0005")
        assert "progress" not in {c["name"] for c in sa.inspect(conn).get_columns("runs")}
    reg.close()
    Database.open(tmp_path, upgrade=True).close()
    reg = Registry(tmp_path)
    assert reg.get_run(run_id)["progress"] is None  # a run from before says nothing
    reg.set_progress(run_id, 2, 4)
    reg.finish_run(run_id)
    assert reg.get_run(run_id)["progress"] == {"done": 2, "total": 4, "unit": "rows"}
    with pytest.raises(IntegrityError, match="immutable"):  # the downgrade kept the trigger
        raw_sql(reg, "UPDATE runs SET error = 'x' WHERE id = :id", id=run_id)


def test_progress_values_are_checked_and_described():
    assert describe(None) is None and fraction({"done": 3, "total": None, "unit": "rows"}) is None
    assert describe(progress_value(1234, None)) == "1,234 rows"
    assert describe(progress_value(0, 0, "trials")) == "0 / 0 trials"
    assert describe(progress_value(8, 8, "trials")) == "8 / 8 trials (100%)"
    for hand_written in ({"done": "<b>1</b>", "total": 3}, {"done": True}, {"done": 1, "total": -1}, [1]):
        assert describe(hand_written) is None and fraction(hand_written) is None
    assert describe({"done": 1, "total": 4, "unit": "<i>"}) == "1 / 4 units (25%)"
    for bad in ((-1, 3, "rows"), (1, -3, "rows"), (1, 3, "bytes")):
        with pytest.raises(ValueError):
            progress_value(*bad)
    assert not [t for t in threading.enumerate() if t.name.startswith("heartbeat-")]


def test_runs_list_shows_a_running_runs_progress(cli):  # noqa: F811 - the fixture imported above
    reg = Registry()
    running, ended = reg.start_run("evaluate", {}), reg.start_run("sweep", {})
    reg.set_progress(running, 1234, 3725)
    reg.beat(running)
    reg.set_progress(ended, 2, 8, "trials")
    reg.fail_run(ended, "stopped")
    listing = cli("runs", "list", env={"COLUMNS": "250"}).stdout
    (line,) = [x for x in listing.splitlines() if running in x]
    assert "1,234 / 3,725 rows (33%)" in line
    assert "trials" not in listing  # an ended run's progress is in `runs show`, not the listing
    assert '"done": 2' in cli("runs", "show", ended).stdout
