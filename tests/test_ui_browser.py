"""The dashboard in headless Chromium (Debian's, driven by Playwright), on SQLite and PostgreSQL:
filter runs, open a run, watch a running run, rank, compare two runs, move an alias without and
with the write token; injected markup stays text (no dialog ever opens), no console error, every
figure drawn and laid out."""

import re

import pytest

from cluster.registry.queries import alias_moves
from cluster.registry.record import Registry
from tests.browser import browser_page, laid_out_figures
from tests.ui_records import EVIL_NAME, EVIL_NOTE, EVIL_OWNER, build_record
from tests.ui_server import running_dashboard

pytestmark = [pytest.mark.usefixtures("backend"), pytest.mark.heavy]  # Chromium, twice
WRITE = "write-token-7d1e"
FP = "5e1a7c0ffee0b10c"


def rows_of(page, table: str) -> list[str]:
    """The first column's text (its link's, where it has one) of each data row of a table."""
    script = "els => els.map(e => (e.querySelector('a') || e).innerText.trim())"
    return page.eval_on_selector_all(f"table#{table} tr td:first-child", script)


def test_the_dashboard_in_chromium(tmp_path):
    reg = Registry()
    ids = build_record(reg, tmp_path / "arts")
    with running_dashboard(write=WRITE) as base, browser_page() as (page, problems):
        _runs_filter_and_markup(page, base, ids)
        _a_run(page, base, ids)
        _leaderboard_then_compare(page, base, ids)
        _aliases(page, base, reg, problems)
        page.goto(f"{base}/robustness")
        assert ids["robust"] in page.inner_text("table#robustness") and "drift" in page.inner_text(
            "table#drift"
        )
        assert problems == [], problems  # no console error, no exception, no dialog anywhere
    reg.close()


def _runs_filter_and_markup(page, base, ids):
    page.goto(f"{base}/runs")
    assert page.title() == "Runs · evalcluster"
    owners = page.eval_on_selector_all("table#runs td:nth-child(4)", "els => els.map(e => e.textContent)")
    assert EVIL_OWNER in owners  # shown as the text it is
    assert EVIL_NAME in page.inner_text("table#runs")
    assert page.locator("img").count() == 0 and page.locator("script:not([src])").count() == 0
    page.select_option("select[name=kind]", "sweep")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"/runs\?kind=sweep"))
    assert sorted(rows_of(page, "runs")) == sorted([ids["sweep_random"], ids["sweep_pretrained"]])
    page.goto(f"{base}/runs")
    page.fill("input[name=owner]", EVIL_OWNER)  # a filter value with markup, sent and shown back as text
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"owner=%3Cscript"))
    assert rows_of(page, "runs") == [ids["mid"]]
    assert page.input_value("input[name=owner]") == EVIL_OWNER
    page.goto(f"{base}/runs")  # live state: the running run (this process) and the stale one (a lost node)
    live = page.locator(f'tr[data-live="{ids["running"]}"] [data-field="heartbeat"]')
    page.wait_for_function(
        "id => document.querySelector(`tr[data-live='${id}'] [data-field=heartbeat]`).textContent.includes('ago')",
        arg=ids["running"],
    )
    assert "running" in live.inner_text()
    assert page.locator(f'tr[data-live="{ids["stale"]}"] .badge.stale').count() == 1


def _a_run(page, base, ids):
    page.goto(f"{base}/runs")
    page.click(f"a[href='/runs/{ids['mid']}']")
    page.wait_for_url(f"{base}/runs/{ids['mid']}")
    assert ids["mid"] in page.inner_text("h1")
    assert "Macro F1" in page.inner_text("main") and "Slices by domain" in page.inner_text("main")
    assert len(laid_out_figures(page)) >= 3  # confusion, per class, reliability
    frame = page.frame_locator("iframe.report")
    assert frame.locator("h1").inner_text().startswith("Evaluation of m-mid")
    page.goto(f"{base}/runs/{ids['sweep_pretrained']}")
    assert len(laid_out_figures(page)) == 1 and "Pretrained vs random init" in page.inner_text("main")


def _leaderboard_then_compare(page, base, ids):
    page.goto(f"{base}/leaderboard")
    page.click(f"a[href^='/leaderboard/{FP}']")
    page.wait_for_url(re.compile(f"/leaderboard/{FP}"))
    assert rows_of(page, "ranking") == ["1", "2", "3"]
    ranked = page.eval_on_selector_all("table#ranking td:nth-child(2)", "els => els.map(e => e.innerText)")
    assert ranked == [ids["strong"], ids["mid"], ids["weak"]]
    assert len(laid_out_figures(page)) == 1
    page.select_option("select[name=subset]", "perturbation:typo@0.1")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile("subset=perturbation"))
    assert page.eval_on_selector_all("table#ranking td:nth-child(2)", "els => els.map(e => e.innerText)") == [
        ids["robust"]
    ]
    page.goto(f"{base}/leaderboard/{FP}")
    page.locator("table#ranking tr", has_text=ids["weak"]).get_by_text("compare with leader").click()
    page.wait_for_url(re.compile("/compare\\?"))
    assert page.inner_text("#verdict").startswith("A better on f1_macro")  # A = the leader
    assert len(laid_out_figures(page)) == 3
    assert "Disagreements" in page.inner_text("main") and page.locator("table#examples tr").count() == 21


def _aliases(page, base, reg, problems):
    page.goto(f"{base}/aliases")
    notes = page.eval_on_selector_all("table#history td.text", "els => els.map(e => e.textContent)")
    assert EVIL_NOTE in notes
    page.goto(f"{base}/models/m-strong")
    page.click("text=point an alias here")
    page.fill("input[name=alias]", "serving")
    page.fill("input[name=by]", "dee")
    page.click("form#move button[type=submit]")  # no write token
    assert "nothing was moved" in page.inner_text(".error")
    assert reg.resolve_model("serving")["id"] == "m-mid"
    page.fill("input[name=write_token]", "not-the-token")
    page.fill("input[name=model]", "m-strong")
    page.click("form#move button[type=submit]")
    assert "nothing was moved" in page.inner_text(".error")
    assert reg.resolve_model("serving")["id"] == "m-mid"
    problems[:] = [p for p in problems if "status of 403" not in p]  # the two refusals, as expected
    page.fill("input[name=write_token]", WRITE)
    page.fill("input[name=model]", "m-strong")
    page.click("form#move button[type=submit]")
    page.wait_for_url(re.compile("/aliases\\?moved=serving"))
    assert reg.resolve_model("serving")["id"] == "m-strong"
    first = page.eval_on_selector_all(
        "table#history tr:nth-child(2) td", "els => els.map(e => e.innerText.trim())"
    )
    assert first[1:6] == ["serving", "m-mid", "m-strong", "dee", "ui"]
    assert alias_moves(reg.database, "serving", limit=1)[0]["moved_by"] == "dee"
