"""The registry on both backends: the SQLite file and a real PostgreSQL 15 server.

Every test here runs twice (the ``backend`` fixture): once on the SQLite file
under EVALCLUSTER_HOME, once on a fresh PostgreSQL database.
"""

import os
import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

import cluster.registry.record as registry_module
from cluster.errors import UserError
from cluster.registry.db.schema import VERSION_TABLE, runs
from cluster.registry.heartbeat import stale_reason
from cluster.registry.queries import alias_moves
from cluster.registry.record import Registry
from tests.registry_helpers import start_writer, writers_context

pytestmark = pytest.mark.usefixtures("backend")
LONG_AGO = "2000-01-01T00:00:00+00:00"


def raw_sql(reg, sql, **params):
    """Plain SQL on the registry's own connection, as anyone with database access could run it."""
    with reg.database.write() as conn:
        return conn.execute(sa.text(sql), params)


def wait_for(predicate, deadline_s=30.0, what="condition"):
    end = time.monotonic() + deadline_s
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


# ------------------------------------------------------------------ runs


def test_run_lifecycle_and_immutability(tmp_path):
    reg = Registry(tmp_path)
    run_id = reg.start_run("evaluate", {"model": "x"}, owner="ana", dataset_fingerprint="fp1")
    run = reg.get_run(run_id)
    assert run["status"] == "running" and run["pid"] == os.getpid() and run["host"]
    assert run["heartbeat_at"] == run["created_at"]
    reg.finish_run(run_id, metrics={"accuracy": 0.5}, artifact_path="/a")
    run = reg.get_run(run_id[:-2])  # unique prefix works
    assert run["status"] == "finished" and run["metrics"] == {"accuracy": 0.5}
    assert run["owner"] == "ana" and run["versions"]["ray"].startswith("2.60")
    with pytest.raises(RuntimeError, match="immutable"):
        reg.finish_run(run_id, metrics={"accuracy": 1.0})
    reg.fail_run(run_id, "late failure")  # ignored: finished stays finished
    assert reg.get_run(run_id)["metrics"] == {"accuracy": 0.5}


def test_failed_block_marks_run_failed(tmp_path):
    reg = Registry(tmp_path)
    with pytest.raises(ValueError), reg.run("evaluate", {}) as run_id:
        raise ValueError("boom")
    run = reg.get_run(run_id)
    assert run["status"] == "failed" and "boom" in run["error"] and run["metrics"] is None


def test_database_itself_refuses_to_rewrite_a_final_run(tmp_path):
    reg = Registry(tmp_path)
    done = reg.start_run("evaluate", {})
    reg.finish_run(done, metrics={"f1": 0.5})
    for sql in (
        "UPDATE runs SET metrics = '{\"f1\": 1.0}' WHERE id = :id",
        "UPDATE runs SET status = 'running', finished_at = NULL WHERE id = :id",
        "UPDATE runs SET heartbeat_at = '2030-01-01' WHERE id = :id",
    ):
        with pytest.raises(IntegrityError, match="immutable"):
            raw_sql(reg, sql, id=done)
    assert reg.get_run(done)["metrics"] == {"f1": 0.5}
    live = reg.start_run("evaluate", {})
    for sql in (
        "UPDATE runs SET status = 'done', finished_at = '2030-01-01' WHERE id = :id",  # not a status
        "UPDATE runs SET status = 'finished' WHERE id = :id",  # finished without a finish time
        "UPDATE runs SET finished_at = '2030-01-01' WHERE id = :id",  # running with one
    ):
        with pytest.raises(IntegrityError, match="ck_runs_"):
            raw_sql(reg, sql, id=live)
    with pytest.raises(IntegrityError):
        raw_sql(
            reg,
            "INSERT INTO runs (id, kind, owner, created_at, status, spec) VALUES ('x', 'k', 'o', 't', 'paused', '{}')",
        )
    assert reg.get_run(live)["status"] == "running"


def test_like_wildcards_are_literal_and_long_ids_one_clear_error(tmp_path):
    reg = Registry(tmp_path)
    reg.start_run("evaluate", {}, run_id="eval_a-1")
    reg.start_run("evaluate", {}, run_id="evalXa-2")
    with pytest.raises(UserError, match='no run "%"'):
        reg.get_run("%")
    assert reg.get_run("eval_")["id"] == "eval_a-1"  # '_' is not "any character"
    with pytest.raises(UserError, match="run id of 60000 characters; ids are at most 200"):
        reg.get_run("x" * 60000)
    with pytest.raises(UserError, match="empty run id"):
        reg.get_run("")
    reg.register_model("/a", model_id="m-abc_de1")
    reg.register_model("/b", model_id="m-abcXde2")
    assert reg.resolve_model("m-abc_")["path"] == "/a"
    assert reg.resolve_model("m-%%%%") is None
    assert reg.resolve_model("m" * 60000) is None  # no LIKE pattern of that size reaches SQLite


def test_duplicate_ids_are_user_errors(tmp_path):
    reg = Registry(tmp_path)
    reg.start_run("evaluate", {}, run_id="r-1")
    with pytest.raises(UserError, match='run id "r-1" is already taken'):
        reg.start_run("evaluate", {}, run_id="r-1")
    reg.register_model("/a", model_id="m-1")
    with pytest.raises(UserError, match='model id "m-1" is already taken'):
        reg.register_model("/b", model_id="m-1")


# ------------------------------------------------------------------ heartbeats and stale runs


def test_heartbeat_thread_keeps_the_run_alive_and_stops_with_the_block(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALCLUSTER_HEARTBEAT_S", "0.05")
    reg = Registry(tmp_path)
    with reg.run("evaluate", {}) as run_id:
        raw_sql(reg, "UPDATE runs SET heartbeat_at = :t WHERE id = :id", t=LONG_AGO, id=run_id)
        wait_for(lambda: reg.get_run(run_id)["heartbeat_at"] != LONG_AGO, what="a heartbeat")
        assert stale_reason(reg.get_run(run_id)) is None
        reg.finish_run(run_id)
    assert not [t for t in threading.enumerate() if t.name == f"heartbeat-{run_id}"]
    assert reg.get_run(run_id)["status"] == "finished"


def test_stale_runs_process_gone_or_silent(tmp_path):
    reg = Registry(tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid is free now
    dead = reg.start_run("evaluate", {})
    raw_sql(reg, "UPDATE runs SET pid = :pid WHERE id = :id", pid=gone.pid, id=dead)
    assert stale_reason(reg.get_run(dead)) == f"process {gone.pid} on {reg.get_run(dead)['host']} is gone"
    remote = reg.start_run("evaluate", {})
    raw_sql(reg, "UPDATE runs SET host = 'elsewhere', pid = 1 WHERE id = :id", id=remote)
    run = reg.get_run(remote)
    assert stale_reason(run) is None  # just beat: alive as far as anyone can tell
    later = datetime.fromisoformat(run["heartbeat_at"]) + timedelta(seconds=301)
    assert stale_reason(run, now=later, after_s=300) == "no heartbeat for 5m 1s"
    mine = reg.start_run("evaluate", {})
    assert stale_reason(reg.get_run(mine)) is None  # this process is alive
    reg.finish_run(mine)
    assert stale_reason(reg.get_run(mine), now=later, after_s=1) is None  # ended runs are never stale


def test_fail_stale_runs_leaves_a_run_that_beats_meanwhile(tmp_path, monkeypatch):
    reg = Registry(tmp_path)
    a, b, c = (reg.start_run("evaluate", {}) for _ in range(3))
    for run_id, seen in (
        (a, LONG_AGO),
        (b, LONG_AGO),
        (c, (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()),
    ):
        raw_sql(
            reg, "UPDATE runs SET host = 'elsewhere', heartbeat_at = :t WHERE id = :id", t=seen, id=run_id
        )
    real = registry_module.stale_reason

    def judged_then_b_beats(run):
        why = real(run, after_s=60)
        if run["id"] == b:
            reg.beat(b)  # b's process comes back between the listing and the UPDATE
        return why

    monkeypatch.setattr(registry_module, "stale_reason", judged_then_b_beats)
    failed = reg.fail_stale_runs("swept", older_than_s=600)
    assert [r["id"] for r in failed] == [a]  # c: silent for 5 minutes only, under --older-than
    assert reg.get_run(a)["status"] == "failed" and reg.get_run(a)["error"].startswith("swept: no heartbeat")
    assert reg.get_run(b)["status"] == "running" and reg.get_run(c)["status"] == "running"
    assert [r["id"] for r in reg.fail_stale_runs("swept")] == [c]  # no age limit: stale is enough


def test_mark_failed_only_running_runs(tmp_path):
    reg = Registry(tmp_path)
    run_id = reg.start_run("evaluate", {})
    assert reg.mark_failed(run_id[:-1], "operator: node lost")["id"] == run_id
    assert reg.get_run(run_id)["error"] == "operator: node lost"
    with pytest.raises(UserError, match=f"run {run_id} is failed, not running; its record is final"):
        reg.mark_failed(run_id, "again")


# ------------------------------------------------------------------ models and aliases


def test_aliases_and_resolution(tmp_path):
    reg = Registry(tmp_path)
    m1 = reg.register_model("/m1", base_model="base")
    m2 = reg.register_model("/m2", base_model="base")
    reg.set_alias("best", m1)
    reg.set_alias("serving", "best")
    assert reg.resolve_model("serving")["id"] == m1
    reg.set_alias("best", m2)
    assert reg.resolve_model("best")["path"] == "/m2"
    assert reg.resolve_model("nothing") is None
    with pytest.raises(UserError, match='no registered model "bets" \\(did you mean "best"'):
        reg.set_alias("x", "bets")
    assert {m["id"]: m["aliases"] for m in reg.list_models()} == {m2: "best", m1: "serving"}
    assert reg.remove_alias("serving") == m1
    assert reg.resolve_model("serving") is None and reg.resolve_model(m1)["path"] == "/m1"
    with pytest.raises(UserError, match='no alias "bets" \\(did you mean "best"\\?\\); aliases: best'):
        reg.remove_alias("bets")


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("", "invalid alias name"),
        ("base", '"base" is reserved'),
        ("[/x]", 'invalid alias name "\\[/x\\]"'),
        ("a b", "invalid alias name"),
        ("-x", "invalid alias name"),
        ("x\x1b[31m", r'invalid alias name "x\\x1b\[31m"'),
        ("a" * 65, "invalid alias name"),
    ],
)
def test_alias_names_are_validated(tmp_path, name, fragment):
    reg = Registry(tmp_path)
    model_id = reg.register_model("/m1")
    with pytest.raises(UserError, match=fragment):
        reg.set_alias(name, model_id)
    assert reg.list_models()[0]["aliases"] is None


def test_alias_name_charset_accepts_the_documented_names(tmp_path):
    reg = Registry(tmp_path)
    model_id = reg.register_model("/m1")
    for name in ("serving", "v1.2_rc-3", "A" * 64, "0day"):
        assert reg.set_alias(name, model_id) == model_id


def test_unknown_run(tmp_path):
    with pytest.raises(UserError, match='no run "nope"'):
        Registry(tmp_path).get_run("nope")


# ------------------------------------------------------------------ concurrency and crashes


def _writer(home, i):
    reg = Registry(home)
    for j in range(5):
        rid = reg.start_run("evaluate", {"i": i, "j": j}, owner=f"w{i}")
        reg.finish_run(rid, metrics={"i": i, "j": j})


@pytest.mark.heavy  # eight writer processes
def test_eight_processes_write_at_once_and_lose_nothing(tmp_path):
    procs = [start_writer(_writer, str(tmp_path), i) for i in range(8)]
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    found = Registry(tmp_path).list_runs()
    assert len(found) == 40 and all(r["status"] == "finished" for r in found)
    assert {(r["metrics"]["i"], r["metrics"]["j"]) for r in found} == {
        (i, j) for i in range(8) for j in range(5)
    }


def _stuck_in_a_transaction(home, ready):
    """Insert a run, a model and an alias in one transaction, then wait to be killed before COMMIT."""
    from sqlalchemy import insert

    from cluster.registry import aliases
    from cluster.registry.db.schema import models

    reg = Registry(home)
    with reg.database.write() as conn:
        row = {
            "id": "half-run",
            "kind": "evaluate",
            "owner": "w",
            "created_at": LONG_AGO,
            "status": "running",
        }
        conn.execute(insert(runs).values(**row, spec="{}"))
        conn.execute(insert(models).values(id="m-half", path="/half", created_at=LONG_AGO))
        aliases.move(conn, "best", "m-half", LONG_AGO, "w", "test")  # the alias and its history row
        ready.set()
        time.sleep(600)


def test_writer_killed_mid_transaction_leaves_no_partial_record(tmp_path):
    reg = Registry(tmp_path)
    before = reg.register_model("/m0")
    reg.set_alias("best", before)
    ready = writers_context().Event()
    proc = start_writer(_stuck_in_a_transaction, str(tmp_path), ready)
    assert ready.wait(60), "the writer never reached the middle of its transaction"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    reg = Registry(tmp_path)
    assert reg.list_runs() == [] and [m["id"] for m in reg.list_models()] == [before]
    assert reg.resolve_model("best")["id"] == before
    assert [m["to_model"] for m in alias_moves(reg.database, "best")] == [before]  # no half-move
    after = reg.register_model("/m1")  # nothing is left locked: the next writer goes straight through
    assert reg.set_alias("best", after) == after


# ------------------------------------------------------------------ schema revisions


def test_schema_newer_than_the_code_is_refused(tmp_path):
    reg = Registry(tmp_path)
    run_id = reg.start_run("evaluate", {})
    raw_sql(reg, f"UPDATE {VERSION_TABLE} SET version_num = '9999'")
    with pytest.raises(
        UserError, match="is at schema revision 9999, newer than this code \\(which knows up to 0006\\)"
    ):
        Registry(tmp_path).get_run(run_id)


def test_pending_upgrade_automatic_on_sqlite_explicit_on_postgresql(tmp_path, backend):
    from alembic import command
    from alembic.config import Config

    from cluster.registry.db.migrate import MIGRATIONS
    from cluster.registry.db.store import Database

    reg = Registry(tmp_path)
    run_id = reg.start_run("evaluate", {})
    reg.finish_run(run_id, metrics={"f1": 0.5})
    with reg.database.write() as conn:  # back to revision 0001, as an older evalcluster left it
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.downgrade(config, "0001")
    reg.close()
    if backend == "postgresql":
        with pytest.raises(
            UserError, match="at schema revision 0001, this code needs 0006: run `evalctl db upgrade`"
        ):
            Registry(tmp_path).get_run(run_id)
        Database.open(tmp_path, upgrade=True).close()
    run = Registry(tmp_path).get_run(run_id)
    assert run["metrics"] == {"f1": 0.5} and run["host"] is None
    with pytest.raises(IntegrityError, match="immutable"):
        raw_sql(Registry(tmp_path), "UPDATE runs SET metrics = NULL WHERE id = :id", id=run_id)


def test_a_database_of_another_application_is_refused_untouched(tmp_path, backend):
    import sqlite3

    if backend == "sqlite":
        tmp_path.mkdir(exist_ok=True)
        con = sqlite3.connect(tmp_path / "registry.db")
        con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        con.commit()
        con.close()
        content = (tmp_path / "registry.db").read_bytes()
    else:
        engine = sa.create_engine(os.environ["EVALCLUSTER_DB"])
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)"))
            conn.execute(sa.text("CREATE TABLE runs (id TEXT PRIMARY KEY)"))
    with pytest.raises(
        UserError, match=r"is not an evalcluster registry: it holds other tables \(customers\)"
    ):
        Registry(tmp_path).list_runs()
    if backend == "sqlite":
        assert (tmp_path / "registry.db").read_bytes() == content
    else:
        assert set(sa.inspect(engine).get_table_names()) == {"customers", "runs"}
        engine.dispose()
