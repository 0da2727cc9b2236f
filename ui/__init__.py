"""The team's web dashboard: runs, leaderboards, comparisons, sweeps, models and aliases in a browser.

A FastAPI application (app.py) of server-rendered Jinja2 pages (templates/) with the
reports' SVG figures (cluster/report) and a little vanilla JavaScript for the live state of
running runs (static/live.js). Every page reads the records the CLI prints, through the
same functions (cluster/registry: queries, leaderboard, comparison); the only write is
moving an alias, with the write token (models.py). Served by uvicorn from `evalctl ui`
(server.py) or as a Ray Serve application (serve_app.py). Imports go ui -> cluster only.
"""
