"""`evalctl ui` as a user runs it: serves on 127.0.0.1, refuses to expose itself without a token,
says a taken port in one line; and the dashboard on Ray Serve next to the scorer, under /ui."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from cluster.registry.record import Registry
from tests.conftest import ROOT, free_port


def assert_one_line(proc, *fragments):
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.cli
def test_evalctl_ui_serves_here_until_interrupted(tmp_path):
    port = free_port()
    reg = Registry()
    run = reg.start_run("evaluate", {}, owner="ana")
    reg.close()
    env = {**os.environ, "EVALCLUSTER_UI_WRITE_TOKEN": "wt-123456", "COLUMNS": "250"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "ui", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/runs", timeout=5)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr and proc.stderr.read()
                time.sleep(0.2)
        assert page.status_code == 200 and run in page.text
        assert "moving an alias needs the write token" in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert f"dashboard at http://127.0.0.1:{port}/" in out and "alias moves need the write token" in out
    assert "wt-123456" not in out + err


@pytest.mark.cli
def test_evalctl_ui_refuses_what_it_cannot_do_safely(evalctl):
    exposed = evalctl("ui", "--host", "0.0.0.0", env={"EVALCLUSTER_UI_TOKEN": ""})
    assert_one_line(exposed, "--host 0.0.0.0 exposes the dashboard", "$EVALCLUSTER_UI_TOKEN")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = evalctl("ui", "--port", str(taken.getsockname()[1]))
    assert_one_line(busy, "cannot listen on 127.0.0.1:", "choose another --port")
    assert_one_line(evalctl("ui", "--port", "70000"), "--port")
    assert_one_line(evalctl("ui", "--route-prefix", "ui"), "--route-prefix")
    broken = evalctl("ui", env={"EVALCLUSTER_DB": "postgresql://u:pw-xyz@127.0.0.1:1/db"})
    assert_one_line(broken, "cannot use the registry database postgresql+psycopg://u:***@")
    assert "pw-xyz" not in broken.stderr + broken.stdout


@pytest.mark.ray
def test_the_dashboard_on_ray_serve_beside_the_scorer(ray_cluster, monkeypatch):
    """`evalctl ui --serve` (deploy_ui) on the session's Ray, on a free port: the pages answer under
    /ui with links under /ui, and the access token is asked for."""
    from ray import serve

    from cluster.specs.ui import UISpec
    from jobs.ui_cli import APP_NAME, deploy_ui

    reg = Registry()
    run = reg.start_run("evaluate", {}, owner="ana")
    reg.close()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    monkeypatch.setenv("EVALCLUSTER_UI_TOKEN", "ui-access-123")
    try:
        url = deploy_ui(UISpec(serve=True), start_head=False, timeout_s=240)
        assert url == f"http://127.0.0.1:{port}/ui"
        assert httpx.get(f"{url}/runs", timeout=30).status_code == 401
        page = httpx.get(f"{url}/runs", headers={"authorization": "Bearer ui-access-123"}, timeout=30)
        assert page.status_code == 200 and run in page.text
        assert f'href="/ui/runs/{run}"' in page.text and 'href="/ui/static/style.css"' in page.text
        assert httpx.get(f"{url}/static/style.css", timeout=30).status_code == 200
        login = httpx.get(f"{url}/runs", headers={"accept": "text/html"}, timeout=30)
        assert login.status_code == 303 and login.headers["location"] == "/ui/login?next=%2Fruns"
    finally:
        serve.delete(APP_NAME)
        serve.shutdown()
