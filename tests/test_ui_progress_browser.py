"""A running run's progress in the dashboard (headless Chromium, on SQLite and PostgreSQL): the runs
page and the run's page show what its heartbeat wrote ("1,234 / 3,725 rows (33%)" and a bar),
live.js follows it as the run goes on and ends; an ended run says how far it got; a hand-written
value of another shape shows nothing."""

import pytest

from cluster.registry.record import Registry
from tests.browser import browser_page
from tests.test_registry import raw_sql, wait_for
from tests.ui_server import running_dashboard

pytestmark = [pytest.mark.usefixtures("backend"), pytest.mark.heavy]  # Chromium, twice
TEXT = "[data-field=progress] .progress-text"
BAR = "[data-field=progress] progress"


def written(reg, run_id, done):
    wait_for(lambda: (reg.get_run(run_id)["progress"] or {}).get("done") == done, what=f"{done} written")


def shows(page, scope, text):
    """Waits until live.js (a 5 s period) shows ``text`` as the progress of ``scope``."""
    page.wait_for_function(
        "([sel, text]) => (document.querySelector(sel) || {}).textContent === text",
        arg=[f"{scope} {TEXT}", text],
        timeout=30_000,
    )


def test_running_progress_shows_and_live_js_follows_it(monkeypatch):
    monkeypatch.setenv("EVALCLUSTER_HEARTBEAT_S", "0.1")
    reg = Registry()
    failed = reg.start_run("sweep", {}, owner="cy")
    reg.set_progress(failed, 3, 8, "trials")
    reg.fail_run(failed, "trial 4 broke")
    quiet = reg.start_run("evaluate", {}, owner="cy")  # running, has not said how far it got
    raw_sql(reg, "UPDATE runs SET progress = :p WHERE id = :id", p='{"done": "<b>x</b>"}', id=quiet)
    with reg.run("evaluate", {}, owner="cy") as run_id, running_dashboard() as base:
        reg.set_progress(run_id, 1234, 3725)
        written(reg, run_id, 1234)
        with browser_page() as (page, problems):
            row = f'tr[data-live="{run_id}"]'
            page.goto(f"{base}/runs")
            assert page.inner_text(f"{row} {TEXT}") == "1,234 / 3,725 rows (33%)"
            bar = page.locator(f"{row} {BAR}")
            assert bar.is_visible() and bar.evaluate("b => [b.value, b.max]") == [1234, 3725]
            assert not page.locator(f'tr[data-live="{quiet}"] {BAR}').is_visible()  # nothing said
            reg.set_progress(run_id, 3000, 3725)
            shows(page, row, "3,000 / 3,725 rows (80%)")  # without reloading the page
            assert bar.evaluate("b => [b.value, b.max]") == [3000, 3725]
            page.goto(f"{base}/runs/{run_id}")
            head = f'p[data-live="{run_id}"]'
            assert page.inner_text(f"{head} {TEXT}") == "3,000 / 3,725 rows (80%)"
            reg.set_progress(run_id, 3725, 3725)
            shows(page, head, "3,725 / 3,725 rows (100%)")
            reg.finish_run(run_id)
            page.wait_for_selector("p.meta [data-field=status] .badge.finished", timeout=30_000)
            assert not page.locator(f"p.meta {BAR}").is_visible()  # ended: no live bar (live.js)
            assert page.locator(f'p[data-live="{run_id}"]').count() == 0  # and no more polling for it
            page.goto(f"{base}/runs/{failed}")
            assert "progress at the end: 3 / 8 trials (37%)" in page.inner_text("main")
            assert problems == [], problems
    assert reg.get_run(run_id)["progress"] == {"done": 3725, "total": 3725, "unit": "rows"}
