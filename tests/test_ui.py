"""The dashboard over HTTP, on SQLite and PostgreSQL: every page answers from the records the CLI
prints, pages are queried in the database, tokens and CSRF guard what they must, bad input is one
line, and no secret reaches a response. (In Chromium: tests/test_ui_browser.py.)"""

import html
import re
import threading

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from cluster.registry.leaderboard import leaderboard
from cluster.registry.queries import alias_moves
from cluster.registry.record import Registry
from tests.ui_records import EVIL_NAME, EVIL_OWNER, build_record
from tests.ui_server import running_dashboard

pytestmark = pytest.mark.usefixtures("backend")
FP = "5e1a7c0ffee0b10c"
WRITE = "write-token-9f2c"


@pytest.fixture
def record(tmp_path):
    reg = Registry()
    ids = build_record(reg, tmp_path / "arts")
    reg.close()
    return ids


def run_links(html: str) -> list[str]:
    """The run ids linked from a page's first listing table, in order."""
    table = html.split('class="listing"', 1)[1].split("</table>", 1)[0]
    return list(dict.fromkeys(re.findall(r'href="/runs/([^"/?]+)"', table)))


def test_pages_show_what_the_cli_prints(record):
    from jobs.team import compare_runs

    reg = Registry()
    with running_dashboard() as base, httpx.Client(base_url=base, timeout=60) as http:
        assert run_links(http.get("/runs").text) == [r["id"] for r in reg.list_runs(limit=50)]
        sweeps = http.get("/sweeps").text
        assert run_links(sweeps) == [r["id"] for r in reg.list_runs(kind="sweep")]
        board = http.get(f"/leaderboard/{FP}").text
        assert run_links(board) == [r["id"] for r in leaderboard(reg, FP, "f1_macro")[FP]]
        typo = http.get(f"/leaderboard/{FP}", params={"subset": "perturbation:typo@0.1"}).text
        assert run_links(typo) == [
            r["id"] for g in leaderboard(reg, FP, "f1_macro", "typo").values() for r in g
        ]
        cli = compare_runs(reg, record["weak"], record["strong"])
        page = http.get("/compare", params={"a": record["weak"], "b": record["strong"]}).text
        assert html.escape(cli["verdict"]) in page and f"p = {cli['mcnemar']['p_value']:.3g}" in page
        for ref in ("sweep_pretrained", "robust", "drift", "gate", "failed", "stale", "mid"):
            assert http.get(f"/runs/{record[ref]}").status_code == 200, ref
        sweep = http.get(f"/runs/{record['sweep_pretrained']}").text
        assert record["sweep_random"] in sweep and "Pretrained vs random init" in sweep
        for path in (
            "/leaderboard",
            "/models",
            "/models/m-strong",
            "/aliases",
            "/robustness",
            "/aliases/move",
        ):
            assert http.get(path).status_code == 200, path
        report = http.get(f"/runs/{record['mid']}/report")
        assert report.headers["content-security-policy"].startswith("sandbox")
    reg.close()


def test_user_strings_are_text_in_every_page(record):
    with running_dashboard() as base, httpx.Client(base_url=base, timeout=60) as http:
        for path in ("/runs", f"/runs/{record['mid']}", f"/leaderboard/{FP}", "/aliases", "/models/m-mid"):
            page = http.get(path).text
            assert EVIL_OWNER not in page and "<img src=x" not in page and "<script>alert" not in page, path
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
        assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in http.get("/runs").text
        assert EVIL_NAME not in http.get(f"/runs/{record['mid']}").text


def test_listings_are_paged_in_the_database(record):
    """Every query a page runs on runs or scores is limited, counted, or by key: nothing loads a table."""
    seen: list[str] = []
    lock = threading.Lock()

    def capture(conn, cursor, statement, params, context, executemany):
        with lock:
            seen.append(" ".join(statement.split()))

    event.listen(Engine, "before_cursor_execute", capture)
    try:
        with running_dashboard(page_size=5) as base, httpx.Client(base_url=base, timeout=60) as http:
            for path in ("/runs", "/runs?kind=evaluate", f"/leaderboard/{FP}", "/leaderboard", "/robustness"):
                assert http.get(path).status_code == 200
            older = re.search(r'href="(/runs\?before=[^"]+)"', http.get("/runs").text).group(1)
            assert len(run_links(http.get(older.replace("&amp;", "&")).text)) == 5
    finally:
        event.remove(Engine, "before_cursor_execute", capture)
    reads = [s for s in seen if s.upper().startswith("SELECT") and re.search(r"\bFROM (runs|scores)\b", s)]
    assert reads
    for s in reads:
        assert re.search(r"\bLIMIT\b|count\(|\.id = |runs\.id = ", s, re.IGNORECASE), s


def test_the_access_token_guards_every_page(record):
    with running_dashboard(access="a-secret-token") as base, httpx.Client(base_url=base, timeout=60) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/runs").status_code == 401
        assert http.get(f"/runs/{record['mid']}/report").status_code == 401
        assert http.get("/api/runs/live", params={"id": record["running"]}).status_code == 401
        browser = http.get("/runs", headers={"accept": "text/html"})
        assert browser.status_code == 303 and browser.headers["location"] == "/login?next=%2Fruns"
        assert http.get("/runs", headers={"authorization": "Bearer a-secret-token"}).status_code == 200
        assert http.get("/runs", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert http.post("/login", data={"token": "wrong", "next": "/runs"}).status_code == 401
        ok = http.post("/login", data={"token": "a-secret-token", "next": "https://evil.example/"})
        assert ok.status_code == 303 and ok.headers["location"] == "/runs"  # never to another site
        cookie = ok.cookies["evalcluster_ui_session"]
        assert "a-secret-token" not in cookie and "samesite=strict" in ok.headers["set-cookie"].lower()
        assert http.get("/runs", cookies={"evalcluster_ui_session": cookie}).status_code == 200
        assert http.get("/runs", cookies={"evalcluster_ui_session": "forged"}).status_code == 401


def test_moving_an_alias_needs_the_write_token_and_the_forms_csrf_token(record):
    reg = Registry()
    with running_dashboard(write=WRITE) as base, httpx.Client(base_url=base, timeout=60) as http:
        form = http.get("/aliases/move", params={"alias": "serving", "model": "m-strong"})
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        assert http.cookies["evalcluster_ui_csrf"] == csrf
        move = {"alias": "serving", "model": "m-strong", "by": "dee", "note": "promote", "csrf": csrf}
        refused = {
            "no token": (move, {}, "missing or wrong"),
            "wrong token": ({**move, "write_token": "nope"}, {}, "missing or wrong"),
            "no csrf": ({**move, "write_token": WRITE, "csrf": ""}, {}, "reload it"),
            "cross-site": ({**move, "write_token": WRITE}, {"sec-fetch-site": "cross-site"}, "cross-site"),
            "foreign origin": (
                {**move, "write_token": WRITE},
                {"origin": "http://evil.example"},
                "cross-site",
            ),
        }
        for why, (data, headers, said) in refused.items():
            r = http.post("/aliases/move", data=data, headers=headers)
            assert r.status_code == 403 and said in r.text, why
            assert reg.resolve_model("serving")["id"] == "m-mid", why
        anonymous = http.post("/aliases/move", data={**move, "by": "", "write_token": WRITE})
        assert anonymous.status_code == 400 and reg.resolve_model("serving")["id"] == "m-mid"
        bad = http.post("/aliases/move", data={**move, "alias": "base", "write_token": WRITE})
        assert bad.status_code == 400 and "reserved" in bad.text
        done = http.post("/aliases/move", data={**move, "write_token": WRITE})
        assert done.status_code == 303 and done.headers["location"] == "/aliases?moved=serving"
    assert reg.resolve_model("serving")["id"] == "m-strong"
    last = alias_moves(reg.database, "serving", limit=1)[0]
    assert (last["from_model"], last["to_model"], last["moved_by"], last["via"], last["note"]) == (
        "m-mid", "m-strong", "dee", "ui", "promote",
    )  # fmt: skip
    with running_dashboard() as base:  # no write token configured: read-only
        r = httpx.post(
            f"{base}/aliases/move", data={**move, "write_token": WRITE}, cookies={"evalcluster_ui_csrf": csrf}
        )
        assert r.status_code == 403 and "read-only" in r.text
    reg.close()


def test_bad_requests_are_one_line_pages(record):
    with running_dashboard() as base, httpx.Client(base_url=base, timeout=60) as http:
        cases = {
            "/runs?status=done": (400, "unknown status &#34;done&#34;"),
            "/runs?since=yesterday": (400, "since: &#34;yesterday&#34; is not a date"),
            "/runs?before=nonsense": (400, "bad page cursor"),
            "/runs/" + "x" * 5000: (400, "ids are at most 200 characters"),
            "/runs/no-such-run": (404, "no run &#34;no-such-run&#34;"),
            "/models/m-nothing": (404, "no registered model"),
            f"/leaderboard/{FP}?metric=f1_macr": (400, "unknown metric"),
            f"/compare?a={record['weak']}&b={record['other_data']}": (400, "evaluated different datasets"),
            f"/compare?a={record['weak']}&b={record['sweep_random']}": (400, "compare finished evaluations"),
            "/nowhere": (404, "no such page"),
        }
        for path, (status, fragment) in cases.items():
            r = http.get(path)
            assert r.status_code == status and fragment in r.text, (path, r.status_code, r.text[-600:])
            assert "Traceback" not in r.text


def test_no_secret_reaches_any_response(record, backend, monkeypatch):
    """The database password and the S3 secret key, even inside a recorded error, never leave."""
    import os

    secret_key = "s3-SECRET-key-0123456789"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    secrets = [secret_key]
    if backend == "postgresql":
        secrets.append(sa.engine.make_url(os.environ["EVALCLUSTER_DB"]).password)
    reg = Registry()
    leaky = reg.start_run("evaluate", {}, owner="ana")
    reg.fail_run(leaky, f"connect failed: password={secrets[-1]} key={secret_key}")
    pages = ["/runs", f"/runs/{leaky}", f"/runs/{record['mid']}", f"/runs/{record['mid']}/report", "/models",
             "/aliases", "/leaderboard", f"/leaderboard/{FP}", "/robustness", "/nowhere",
             f"/api/runs/live?id={record['running']}"]  # fmt: skip
    with running_dashboard(write=WRITE) as base, httpx.Client(base_url=base, timeout=60) as http:
        for path in pages:
            r = http.get(path)
            body = r.text + "".join(f"{k}: {v}" for k, v in r.headers.items())
            for secret in [*secrets, WRITE]:
                assert secret not in body, path
        assert "password=*** key=***" in http.get(f"/runs/{leaky}").text
        if backend == "postgresql":
            assert ":***@" in http.get("/runs").text  # the registry's URL, its password hidden
    reg.close()
