"""evalctl runs / models / db as a user runs them: escaped listings, one-line errors, no secrets."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from cluster.registry.record import Registry
from tests.pg import free_port
from tests.registry_helpers import DAMAGE, MAIN_DB, snapshot

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["negative", "neutral", "positive"]

WIDE = {"COLUMNS": "250"}  # rich tables do not wrap ids in the captured output


def assert_user_error(proc, *fragments, secret=None):
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for frag in fragments:
        assert frag in lines[0], lines[0]
    if secret:
        assert secret not in proc.stderr + proc.stdout


@pytest.fixture
def cli(capsys, monkeypatch):
    """evalctl in this process (as ``evalctl`` runs it, through jobs.entry.run), for the long
    tables of cases: a subprocess costs seconds of imports per call on this machine. Returns a
    CompletedProcess like the ``evalctl`` fixture; extra ``env`` applies to that call only."""
    from jobs import entry
    from jobs.cli import app

    monkeypatch.setattr(entry.console, "width", 250)

    def call(*args, env=None):
        with pytest.MonkeyPatch.context() as mp:
            for key, value in (env or {}).items():
                mp.setenv(key, value)
            try:
                entry.run(app, [str(a) for a in args])
                code = 0
            except SystemExit as exc:
                code = exc.code or 0
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return call


@pytest.fixture
def main_registry(evalcluster_home):
    """EVALCLUSTER_HOME holding main's registry.db (a '[/x]' alias, an owner with markup and ANSI)."""
    evalcluster_home.mkdir()
    shutil.copy(MAIN_DB, evalcluster_home / "registry.db")
    return evalcluster_home


# ------------------------------------------------------------------ escaping (issue 16.8)
@pytest.mark.cli
def test_listings_print_markup_and_control_characters_as_data(cli, evalctl, main_registry):
    reg = Registry()
    run_id = reg.start_run(
        "evaluate", {}, owner="[/x]", dataset_path="[bold]p\x1b[2J", dataset_fingerprint="fp-aaaa"
    )
    reg.finish_run(run_id, metrics={"f1_macro": 0.9, "n": 3})
    for args in (["models", "list"], ["runs", "list"], ["leaderboard"], ["runs", "show", run_id]):
        proc = cli(*args)
        assert proc.returncode == 0, proc.stderr
        assert "\x1b" not in proc.stdout, args
        assert "[/x]" in proc.stdout, args
    listing = evalctl("runs", "list", env=WIDE).stdout  # and once as a real process
    assert "[bold red]RED[/]\\x1b[31m" in listing  # shown as written, the escape made visible
    assert "[bold]p\\x1b[2J" in cli("leaderboard").stdout
    assert "[/x],serving" in cli("models", "list").stdout


def test_alias_and_unalias_commands(cli, main_registry):
    assert_user_error(cli("models", "alias", "[/x]", "best"), 'invalid alias name "[/x]"')
    assert_user_error(cli("models", "alias", "base", "best"), '"base" is reserved')
    proc = cli("models", "unalias", "[/x]", env=WIDE)
    assert proc.returncode == 0 and "removed alias [/x]" in proc.stdout, proc.stderr
    assert_user_error(cli("models", "unalias", "[/x]"), 'no alias "[/x]"', "aliases: best, serving")
    proc = cli("models", "alias", "prod", "serving")
    assert proc.returncode == 0 and "prod -> m-20261128-091000-222222" in proc.stdout


def test_run_lookups_are_literal_and_bounded(cli, main_registry):
    assert_user_error(cli("runs", "show", "%"), 'no run "%"')
    assert_user_error(cli("runs", "show", "evaluate-2026112_"), 'no run "evaluate-2026112_"')
    assert_user_error(cli("runs", "show", "x" * 60000), "run id of 60000 characters")
    assert_user_error(
        cli("runs", "list", "--status", "runing"), 'unknown status "runing" (did you mean "running"?)'
    )


# ------------------------------------------------------------------ db status / upgrade


def test_db_status_and_upgrade_on_mains_registry(cli, main_registry):
    proc = cli("db", "status")
    assert proc.returncode == 0, proc.stderr
    assert "backend   sqlite" in proc.stdout and "revision  unversioned (this code: 0006)" in proc.stdout
    assert "upgrade pending" in proc.stdout
    proc = cli("db", "upgrade", env=WIDE)
    assert proc.returncode == 0 and "upgraded from unversioned to 0006" in proc.stdout, proc.stderr
    assert "already at revision 0006" in cli("db", "upgrade", env=WIDE).stdout
    assert "state     up to date" in cli("db", "status").stdout


@pytest.mark.cli
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_registry_one_line_exit_2_untouched(cli, evalctl, evalcluster_home, damage):
    evalcluster_home.mkdir()
    db = evalcluster_home / "registry.db"
    make, fragment = DAMAGE[damage]
    make(db)
    content = snapshot(db)
    for args in (["runs", "list"], ["db", "status"], ["models", "alias", "a", "b"]):
        assert_user_error(cli(*args), fragment)
    if damage == "truncated":  # one as a real process
        assert_user_error(evalctl("runs", "list"), fragment)
    assert snapshot(db) == content


# ------------------------------------------------------------------ PostgreSQL: bad input, secrets


def test_db_commands_on_postgresql_show_the_url_without_password(cli, pg_server, pg_url):
    env = {"EVALCLUSTER_DB": pg_url}
    proc = cli("db", "status", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "backend   postgresql" in proc.stdout and "no registry yet" in proc.stdout
    assert f"postgresql+psycopg://{pg_server.role}:***@127.0.0.1:{pg_server.port}/" in proc.stdout
    proc = cli("db", "upgrade", env={**env, **WIDE})
    assert proc.returncode == 0 and "upgraded from none to 0006" in proc.stdout, proc.stderr
    proc = cli("db", "status", env=env)
    assert "revision  0006 (this code: 0006)" in proc.stdout and "up to date" in proc.stdout
    for out in (proc.stdout, proc.stderr):
        assert pg_server.password not in out


def bad_settings(pg_server, foreign, tmp_path):
    """(name, environment, fragment of the one-line error) for each kind of bad database setting."""
    role, pw, port = pg_server.role, pg_server.password, pg_server.port
    return [
        ("unreachable", {"EVALCLUSTER_DB": f"postgresql+psycopg://{role}:{pw}@127.0.0.1:{free_port()}/x"},
         "Connection refused"),
        ("wrong password", {"EVALCLUSTER_DB": f"postgresql+psycopg://{role}:not-{pw}@127.0.0.1:{port}/postgres"},
         f'password authentication failed for user "{role}"'),
        ("foreign", {"EVALCLUSTER_DB": foreign},
         "is not an evalcluster registry: it holds other tables (customers); it was left untouched"),
        ("no rights", {"EVALCLUSTER_DB": pg_server.url("postgres", role, pw)},  # owned by the superuser
         "refused: permission denied for schema public"),
        ("bad scheme", {"EVALCLUSTER_DB": f"mysql://{role}:{pw}@127.0.0.1/db"}, 'unsupported scheme "mysql"'),
        ("not a URL", {"EVALCLUSTER_DB": f"postgresql://{role}:{pw}@host:port/db"},
         "EVALCLUSTER_DB is not a database URL"),
        ("no secret file", {"EVALCLUSTER_DB_FILE": str(tmp_path / "nope")}, "cannot read EVALCLUSTER_DB_FILE="),
        ("both", {"EVALCLUSTER_DB": "postgresql://a/b", "EVALCLUSTER_DB_FILE": "/x"}, "set one of them"),
    ]  # fmt: skip


@pytest.mark.cli
def test_bad_database_settings_one_line_exit_2_nothing_written(
    cli, evalctl, pg_server, pg_url, tmp_path, evalcluster_home
):
    foreign = sa.create_engine(pg_url)
    with foreign.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY)"))
    for name, env, fragment in bad_settings(pg_server, pg_url, tmp_path):
        commands = [["runs", "list"], ["models", "alias", "best", "m-1"], ["db", "upgrade"], ["db", "status"]]
        for args in commands[:3] if name == "no rights" else commands:  # status only reads: it can
            assert_user_error(cli(*args, env=env), fragment, secret=pg_server.password)
        if name == "wrong password":  # one as a real process
            assert_user_error(evalctl("runs", "list", env=env), fragment, secret=pg_server.password)
        assert not evalcluster_home.exists(), name  # nothing written, not even the home directory
    assert sa.inspect(foreign).get_table_names() == ["customers"]  # the other application's database
    foreign.dispose()


def test_the_url_can_come_from_a_secret_file(cli, pg_url, tmp_path):
    secret = tmp_path / "db-url"
    secret.write_text(pg_url + "\n")
    proc = cli("models", "list", "--json", env={"EVALCLUSTER_DB_FILE": str(secret)})
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
    proc = cli("db", "status", env={"EVALCLUSTER_DB_FILE": str(secret)})
    assert "backend   postgresql" in proc.stdout and "revision  0006" in proc.stdout


# ------------------------------------------------------------------ evaluate on the registry


@pytest.fixture
def small_data(tmp_path):
    path = tmp_path / "small.parquet"
    texts = [f"text number {i} about flights" for i in range(48)]
    pd.DataFrame({"text": texts, "label": [LABELS[i % 3] for i in range(48)]}).to_parquet(path)
    return path


def evaluate_args(model, data, *extra):
    return ["evaluate", "--model", model, "--data", data, "--bootstrap", "0", "--max-length", "16", *extra]


def all_bytes_under(*roots):
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file():
                yield path, path.read_bytes()


@pytest.mark.ray
def test_no_password_in_anything_a_run_prints_or_writes(
    cli, evalctl, pg_server, pg_url, tiny_model_dir, small_data, tmp_path, evalcluster_home, monkeypatch
):
    monkeypatch.setenv("EVALCLUSTER_DB", pg_url)  # for the commands below and for this process
    env = WIDE
    secret = pg_server.password
    outputs = [evalctl(*evaluate_args(tiny_model_dir, small_data, "--out", tmp_path / "out"), env=env)]
    assert outputs[0].returncode == 0, outputs[0].stderr[-3000:]
    (run,) = Registry().list_runs()  # the run is in PostgreSQL, not in a file under EVALCLUSTER_HOME
    assert run["status"] == "finished" and not (evalcluster_home / "registry.db").exists()
    for args in (["runs", "list"], ["runs", "show", run["id"]], ["models", "list"], ["leaderboard"],
                 ["db", "status"], ["report", run["id"]], ["runs", "list", "--json"]):  # fmt: skip
        outputs.append(cli(*args))
        assert outputs[-1].returncode == 0, (args, outputs[-1].stderr)
    for proc in outputs:
        assert secret not in proc.stdout + proc.stderr
    for path, content in all_bytes_under(tmp_path):
        assert secret.encode() not in content, path
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        for table in ("runs", "models", "aliases"):
            for row in conn.execute(sa.text(f"SELECT * FROM {table}")):
                assert secret not in repr(tuple(row)), table
    engine.dispose()


@pytest.mark.ray
def test_killed_evaluate_is_listed_stale_then_marked_failed(
    cli, backend, tiny_model_dir, small_data, tmp_path
):
    log = open(tmp_path / "evaluate.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *map(str, evaluate_args(tiny_model_dir, small_data))],
        cwd=ROOT, env={**os.environ, "EVALCLUSTER_HEARTBEAT_S": "0.2"}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # its Ray processes, if it got that far, are killed with its group below
    )  # fmt: skip
    try:
        run = _wait_for_running_run(proc, tmp_path / "evaluate.log")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        _kill_group(proc.pid)
        log.close()
    listing = cli("runs", "list").stdout
    assert "stale" in listing and f"process {proc.pid} on {run['host']} is gone" in listing
    assert "`evalctl runs fail --stale` marks them failed" in listing
    proc2 = cli("runs", "fail", "--stale")
    assert proc2.returncode == 0 and "1 stale run(s) marked failed" in proc2.stdout, proc2.stderr
    failed = Registry().get_run(run["id"])
    assert failed["status"] == "failed" and failed["error"].endswith(
        f"process {proc.pid} on {run['host']} is gone"
    )
    assert_user_error(cli("runs", "fail", run["id"]), f"run {run['id']} is failed, not running")


def _wait_for_running_run(proc, log_path, deadline_s=180):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert proc.poll() is None, f"evaluate ended early: {log_path.read_text()[-3000:]}"
        if mine := [r for r in Registry().list_runs(status="running") if r["pid"] == proc.pid]:
            return mine[0]
        time.sleep(0.05)
    raise AssertionError("evaluate never recorded its run")


def _kill_group(pgid):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
