"""What the dashboard and the CLI read, on both backends: scores written with a run's finish,
keyset pages, filters, leaderboards from the scores table, alias history, revision 0004's
backfill, and predictions as one file or a directory of parts."""

from datetime import date

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from cluster.errors import UserError
from cluster.registry.db.schema import alias_history, scores
from cluster.registry.leaderboard import Board, board_datasets, board_page, board_subsets, leaderboard
from cluster.registry.predictions import open_predictions, run_predictions
from cluster.registry.queries import RunFilter, alias_moves, count_runs, models_page, runs_page
from cluster.registry.record import Registry
from cluster.stats.compare import compare_predictions, versus_leader

pytestmark = pytest.mark.usefixtures("backend")


def headline(f1: float, ci: float = 0.02, **extra) -> dict:
    return {
        "n": 100,
        "f1_macro": f1,
        "accuracy": f1 + 0.05,
        "log_loss": 1 - f1,
        "top_k_accuracy": float("nan"),  # NaN under 3 classes: never ranked
        "ci95": {"f1_macro": [f1 - ci, f1 + ci], "accuracy": [f1, f1 + 0.1]},
        **extra,
    }


def finished(reg, kind="evaluate", fp="fp1", metrics=None, **kw):
    run = reg.start_run(kind, {}, dataset_fingerprint=fp, **kw)
    reg.finish_run(run, metrics=metrics if metrics is not None else headline(0.5))
    return run


def stored_scores(reg, run_id):
    with reg.database.read() as conn:
        rows = conn.execute(sa.select(scores).where(scores.c.run_id == run_id)).all()
    return {(r.metric, r.subset): (r.value, r.ci_low, r.ci_high) for r in rows}


def test_finishing_a_run_writes_its_scores_in_the_same_transaction(tmp_path):
    reg = Registry(tmp_path)
    slices = {"airline": {"n": 40, "accuracy": 0.7, "f1_macro": 0.6, "ci95": {"f1_macro": [0.5, 0.7]}}}
    run = finished(reg, metrics=headline(0.61, slices=slices))
    got = stored_scores(reg, run)
    assert got[("f1_macro", "")] == (0.61, pytest.approx(0.59), pytest.approx(0.63))
    assert got[("log_loss", "")][1] is None  # no interval recorded: none stored
    assert got[("f1_macro", "slice:airline")] == (0.6, 0.5, 0.7)
    assert ("top_k_accuracy", "") not in got and ("n", "") not in got
    rob = {"rate": 0.1, "perturbations": {"typo": {"f1_macro": 0.4, "flip_rate": 0.2, "mcnemar_p": 0.01}}}
    robust = finished(reg, kind="robustness", metrics=headline(0.6, robustness=rob))
    assert stored_scores(reg, robust)[("f1_macro", "perturbation:typo@0.1")] == (0.4, None, None)
    assert ("flip_rate", "perturbation:typo@0.1") not in stored_scores(reg, robust)
    sweep = finished(reg, kind="sweep", metrics={"f1_macro": 0.9})  # validation, not a test score
    assert stored_scores(reg, sweep) == {}
    with pytest.raises(RuntimeError, match="immutable"):
        reg.finish_run(run, metrics=headline(0.99))  # a second finish writes nothing
    assert stored_scores(reg, run)[("f1_macro", "")][0] == 0.61


def test_keyset_pages_walk_every_run_once_both_ways_with_filters(tmp_path):
    reg = Registry(tmp_path)
    ids = []
    for i in range(23):
        ids.append(
            reg.start_run("evaluate" if i % 3 else "sweep", {}, owner=f"o{i % 2}", run_id=f"r-{i:02d}")
        )
    with reg.database.write() as conn:  # distinct days, some sharing a second
        for i, run_id in enumerate(ids):
            conn.execute(
                sa.text("UPDATE runs SET created_at = :t WHERE id = :id"),
                {"t": f"2026-11-{1 + i // 2:02d}T10:00:00+00:00", "id": run_id},
            )
    seen, page = [], runs_page(reg.database, RunFilter(), limit=5)
    assert page.newer is None
    pages = [page]
    while page.older:
        page = runs_page(reg.database, RunFilter(), limit=5, before=page.older)
        pages.append(page)
    seen = [r["id"] for p in pages for r in p.rows]
    assert seen == sorted(ids, reverse=True) and len(pages) == 5
    back = runs_page(reg.database, RunFilter(), limit=5, after=pages[2].newer)
    assert [r["id"] for r in back.rows] == [r["id"] for r in pages[1].rows]
    top = runs_page(reg.database, RunFilter(), limit=5, after=pages[1].newer)
    assert [r["id"] for r in top.rows] == [r["id"] for r in pages[0].rows] and top.newer is None
    evals = RunFilter(kind="evaluate", owner="o1", since=date(2026, 11, 3), until=date(2026, 11, 8))
    expect = [f"r-{i:02d}" for i in range(23) if i % 3 and i % 2 and 3 <= 1 + i // 2 <= 8]
    assert [r["id"] for r in runs_page(reg.database, evals, limit=50).rows] == sorted(expect, reverse=True)
    assert count_runs(reg.database, evals) == len(expect)
    with pytest.raises(UserError, match='unknown status "done"'):
        RunFilter(status="done")
    with pytest.raises(UserError, match="bad page cursor"):
        runs_page(reg.database, RunFilter(), before="no-bar-here")
    with pytest.raises(UserError, match="page size must be 1 to 500"):
        runs_page(reg.database, RunFilter(), limit=10_000)


def test_leaderboard_ranks_in_the_database_and_tests_against_the_leader(tmp_path):
    reg = Registry(tmp_path)
    # run ids in the order they are made: the newest (by time, then id) is always fp2's
    weak = finished(reg, metrics=headline(0.50, ci=0.01), model_id="m-weak", run_id="r1")
    close = finished(reg, metrics=headline(0.795, ci=0.03), model_id="m-close", run_id="r2")
    best = finished(reg, metrics=headline(0.80, ci=0.01), model_id="m-best", run_id="r3")
    finished(reg, fp="fp2", metrics=headline(0.99), run_id="r4")
    page = board_page(reg.database, "fp1", Board("f1_macro"), limit=2)
    assert [r["id"] for r in page.rows] == [best, close] and page.total == 3 and page.leader["id"] == best
    assert page.rows[0]["versus"] is None and page.rows[1]["versus"]["p_value"] > 0.5
    rest = board_page(reg.database, "fp1", Board("f1_macro"), limit=2, offset=2)
    assert [(r["rank"], r["id"]) for r in rest.rows] == [(3, weak)]
    assert rest.rows[0]["versus"]["p_value"] < 1e-6
    lower = board_page(reg.database, "fp1", Board("log_loss"), limit=5)  # lower is better
    assert [r["id"] for r in lower.rows] == [best, close, weak]
    datasets, total = board_datasets(reg.database, Board("f1_macro"))
    assert total == 2 and [d["dataset_fingerprint"] for d in datasets] == ["fp2", "fp1"]
    assert datasets[1]["runs"] == 3 and datasets[1]["best"] == 0.80
    assert board_subsets(reg.database, "fp1", "f1_macro") == [""]
    cli = leaderboard(reg, None, "f1_macro")  # the CLI's groups: newest group first, every run
    assert list(cli) == ["fp2", "fp1"] and [r["id"] for r in cli["fp1"]] == [best, close, weak]
    with pytest.raises(UserError, match="unknown metric"):
        board_page(reg.database, "fp1", Board("f1_macr"))


def test_versus_leader_matches_a_z_test_by_hand():
    got = versus_leader(0.8, (0.78, 0.82), 0.7, (0.68, 0.72))
    se = np.hypot(0.04 / (2 * 1.959964), 0.04 / (2 * 1.959964))
    assert got["z"] == pytest.approx(0.1 / se, rel=1e-6)
    assert got["p_value"] < 1e-10 and versus_leader(0.8, None, 0.7, (0.6, 0.8)) is None


def test_alias_moves_are_recorded_by_whom_and_how(tmp_path):
    reg = Registry(tmp_path)
    m1, m2 = reg.register_model("/m1", model_id="m-1"), reg.register_model("/m2", model_id="m-2")
    reg.set_alias("serving", m1, by="ana")
    reg.set_alias("serving", m2, by="<b>bo</b>", via="ui", note="promote after review")
    reg.set_alias("best", "serving")  # via another alias: recorded as the model it resolved to
    assert reg.remove_alias("best") == m2
    moves = alias_moves(reg.database)
    assert [(m["alias"], m["from_model"], m["to_model"], m["via"]) for m in moves] == [
        ("best", m2, None, "cli"),
        ("best", None, m2, "cli"),
        ("serving", m1, m2, "ui"),
        ("serving", None, m1, "cli"),
    ]
    assert moves[2]["moved_by"] == "<b>bo</b>" and moves[2]["note"] == "promote after review"
    assert [m["id"] for m in alias_moves(reg.database, model=m1)] == [moves[2]["id"], moves[3]["id"]]
    assert [m["alias"] for m in alias_moves(reg.database, limit=1, before=moves[1]["id"])] == ["serving"]
    page = models_page(reg.database, limit=1)
    assert page.rows[0]["id"] == m2 and page.rows[0]["aliases"] == ["serving"] and page.older


def test_revision_0004_scores_old_runs_and_starts_alias_history(tmp_path):
    from alembic import command
    from alembic.config import Config

    from cluster.registry.db.migrate import MIGRATIONS
    from cluster.registry.db.store import Database

    reg = Registry(tmp_path)
    model = reg.register_model("/m")
    with reg.database.write() as conn:  # back to 0003, as the previous evalcluster left it
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
        for i, f1 in enumerate((0.4, 0.7)):
            conn.execute(
                sa.text(
                    "INSERT INTO runs (id, kind, owner, created_at, finished_at, status, spec,"
                    " dataset_fingerprint, metrics) VALUES (:id, 'evaluate', 'o', :t, :t, 'finished', '{}', 'fp', :m)"
                ),
                {"id": f"old-{i}", "t": f"2026-11-0{i + 1}T00:00:00+00:00", "m": f'{{"f1_macro": {f1}}}'},
            )
        conn.execute(
            sa.text("INSERT INTO aliases (name, model_id, updated_at) VALUES ('best', :m, 't0')"),
            {"m": model},
        )
    reg.close()
    Database.open(tmp_path, upgrade=True).close()
    reg = Registry(tmp_path)
    assert [r["id"] for r in board_page(reg.database, "fp", Board("f1_macro")).rows] == ["old-1", "old-0"]
    with reg.database.read() as conn:
        (moved,) = conn.execute(sa.select(alias_history)).all()
    assert (moved.alias, moved.to_model, moved.moved_by) == ("best", model, "unknown (before revision 0004)")


def test_predictions_as_one_file_or_a_directory_of_parts_compare_the_same(tmp_path):
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]
    y, pred = rng.integers(0, 3, 1000), rng.integers(0, 3, 1000)
    frame = pd.DataFrame(
        {"row": np.arange(1000), "label": [labels[i] for i in y], "pred": [labels[i] for i in pred]}
    )
    frame["score"] = 0.5
    (tmp_path / "one").mkdir()
    frame.to_parquet(tmp_path / "one" / "predictions.parquet")
    parts = tmp_path / "parts" / "predictions"
    parts.mkdir(parents=True)
    for i, (start, end) in enumerate(((600, 1000), (0, 300), (300, 600))):  # names in no row order
        frame.iloc[start:end].to_parquet(parts / f"{9 - i}_x.parquet")
    (parts / "_SUCCESS").write_text("")
    one, many = run_predictions(str(tmp_path / "one")), run_predictions(str(tmp_path / "parts"))
    assert one.num_rows == many.num_rows == 1000 and len(many.parts) == 3
    rows = np.concatenate([b.column("row").to_numpy() for b in many.batches(["row"], 256)])
    assert (rows == np.arange(1000)).all()
    assert [b.num_rows for b in many.batches(["row"], 256)] == [256, 256, 256, 232]
    counts, diffs = compare_predictions(one, many, labels, replicates=20)
    assert counts.b == counts.c == 0 and diffs["accuracy"]["diff"] == 0.0
    with pytest.raises(UserError, match="not found"):
        open_predictions(str(tmp_path / "nothing.parquet"))
