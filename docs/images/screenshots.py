"""Screenshots of the dashboard's main pages for the README: docs/images/dashboard-*.png.

    python docs/images/screenshots.py

Builds a demo-like record in a temporary EVALCLUSTER_HOME (tests/ui_records.py: evaluations
whose predictions are simulated and scored by the project's own statistics, robustness runs,
sweeps of both inits, aliases moved by several people), serves the dashboard on a free port of
127.0.0.1 (tests/ui_server.py) and photographs each page in headless Chromium (tests/browser.py).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
OUT = Path(__file__).resolve().parent


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ui-shots-") as tmp:
        os.environ["EVALCLUSTER_HOME"] = tmp
        for var in ("EVALCLUSTER_DB", "EVALCLUSTER_DB_FILE", "EVALCLUSTER_ARTIFACTS"):
            os.environ.pop(var, None)
        from cluster.registry.record import Registry
        from tests.browser import browser_page, laid_out_figures
        from tests.ui_records import build_record
        from tests.ui_server import running_dashboard

        reg = Registry()
        ids = build_record(reg, Path(tmp) / "artifacts", more=6)
        shots = {
            "dashboard-runs.png": "/runs",
            "dashboard-run.png": f"/runs/{ids['strong']}",
            "dashboard-leaderboard.png": "/leaderboard/5e1a7c0ffee0b10c",
            "dashboard-compare.png": f"/compare?a={ids['strong']}&b={ids['mid']}",
            "dashboard-sweep.png": f"/runs/{ids['sweep_pretrained']}",
            "dashboard-aliases.png": "/aliases",
        }
        with (
            running_dashboard(write="screenshot-write-token") as base,
            browser_page(1280, 860) as (page, problems),
        ):
            for name, path in shots.items():
                page.goto(base + path)
                laid_out_figures(page)
                height = min(1600, page.evaluate("document.documentElement.scrollHeight"))
                page.screenshot(
                    path=str(OUT / name),
                    full_page=True,
                    clip={"x": 0, "y": 0, "width": 1280, "height": height},
                )
                print(f"{OUT / name}: {path}")
            assert problems == [], problems
        reg.close()


if __name__ == "__main__":
    main()
