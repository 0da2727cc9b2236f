"""Open an HTML report in headless Chromium (Debian's `chromium`, driven by Playwright) and check it.

The check: the page loads with no console error and no uncaught exception, and every
figure (an inline ``<svg>`` in a ``<figure class="fig">``, cluster/report/figures.py) is parsed as
SVG with something drawn (its content's bounding box, getBBox, has a non-zero width) and
laid out (a visible box of non-zero size).
A screenshot of the whole page is written next to the report for a person to look at.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FIGURES = """els => els.map(e => {
  const svg = e.querySelector("svg");
  const r = (svg || e).getBoundingClientRect();
  const s = getComputedStyle(e);
  const drawn = svg instanceof SVGSVGElement ? svg.getBBox().width : 0;
  return {alt: e.getAttribute("aria-label"), drawn: drawn, width: r.width, height: r.height,
          visible: s.display !== "none" && s.visibility !== "hidden" && r.width > 0 && r.height > 0};
})"""


def check_report(path: Path, screenshot: Path | None = None) -> dict:
    """Load ``path``; returns {"errors": [...], "figures": [...], "text": page text}; saves a screenshot."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(Path(path).resolve().as_uri(), wait_until="load")
            figures = page.eval_on_selector_all("figure.fig", FIGURES)
            text = page.inner_text("body")
            page.screenshot(path=str(screenshot or Path(path).with_suffix(".png")), full_page=True)
        finally:
            browser.close()
    return {"errors": errors, "figures": figures, "text": text}


def assert_renders(path: Path, min_figures: int) -> dict:
    """check_report + the assertions every report test makes."""
    found = check_report(path)
    assert found["errors"] == [], found["errors"]
    assert len(found["figures"]) >= min_figures, found["figures"]
    bad = [f for f in found["figures"] if not (f["drawn"] > 0 and f["visible"])]
    assert not bad, bad
    return found


@contextmanager
def browser_page(width: int = 1280, height: int = 900):
    """A headless Chromium page; yields (page, problems): console errors, uncaught exceptions and
    any dialog (an alert() would mean injected script ran), as they happen."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))

            def dialog(d):
                problems.append(f"dialog: {d.message}")
                d.dismiss()

            page.on("dialog", dialog)
            yield page, problems
        finally:
            browser.close()


def laid_out_figures(page) -> list[dict]:
    """The page's figures (FIGURES), asserted drawn and visible."""
    found = page.eval_on_selector_all("figure.fig", FIGURES)
    bad = [f for f in found if not (f["drawn"] > 0 and f["visible"])]
    assert not bad, bad
    return found
