"""Leaderboards: finished evaluations of one dataset ranked by a metric, from the ``scores`` table.

Datasets are never mixed (one leaderboard per dataset fingerprint). A leaderboard ranks
the evaluation runs' scores on all rows or on a slice, or the robustness runs' scores
under a perturbation (subsets: cluster/registry/scores.py). Ranking, paging and counting
run in the database on the ``scores_rank`` index; the runs' rows come with their scores.
`evalctl leaderboard` prints :func:`leaderboard`; the dashboard pages through
:func:`board_page` and :func:`board_datasets`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from cluster.registry.db.schema import decode_row, runs, scores
from cluster.registry.db.store import Database
from cluster.registry.queries import page_limit
from cluster.registry.record import Registry
from cluster.registry.scores import OVERALL, PERTURBATION, subset_kind
from cluster.stats.compare import versus_leader
from cluster.stats.metrics import metric_info

SCORE_COLUMNS = (scores.c.value.label("score"), scores.c.ci_low, scores.c.ci_high)


@dataclass(frozen=True)
class Board:
    """One ranking: ``metric`` on ``subset`` ("" = all rows); its direction from the metric table."""

    metric: str = "f1_macro"
    subset: str = OVERALL

    @property
    def higher(self) -> bool:
        return metric_info(self.metric).higher_is_better  # an unknown metric is a UserError

    @property
    def kind(self) -> str:
        return subset_kind(self.subset)

    def ranked(self, stmt, table=scores):
        """``stmt`` over ``table``'s columns (the scores, or a subquery of them) limited to this
        board's metric and ranked, best first; ties newest first."""
        if table is scores:
            stmt = stmt.where(scores.c.metric == self.metric, scores.c.kind == self.kind)
        best = table.c.value.desc() if self.higher else table.c.value.asc()
        return stmt.order_by(best, table.c.created_at.desc(), table.c.run_id.desc())

    def page(self, fingerprint: str, limit: int, offset: int):
        """One page of the ranking on a dataset: runs with ``score``, ``ci_low``, ``ci_high``.
        Ranked and cut on the scores alone, then joined with the page's runs: the rows skipped
        by the offset are never read from ``runs`` (and PostgreSQL plans no parallel workers,
        which cost 140 ms to start on a busy machine, measured, for a page of 50)."""
        cut = select(scores.c.run_id, scores.c.value, scores.c.ci_low, scores.c.ci_high, scores.c.created_at)
        cut = cut.where(scores.c.dataset_fingerprint == fingerprint, scores.c.subset == self.subset)
        top = self.ranked(cut).limit(page_limit(limit)).offset(max(0, int(offset))).subquery()
        stmt = select(runs, top.c.value.label("score"), top.c.ci_low, top.c.ci_high)
        return self.ranked(stmt.join(top, top.c.run_id == runs.c.id), top)


def _scored_runs():
    return select(runs, *SCORE_COLUMNS).join(scores, scores.c.run_id == runs.c.id)


def leaderboard(
    registry: Registry, fingerprint: str | None, metric: str, perturbation: str | None = None
) -> dict[str, list[dict]]:
    """Finished evaluation runs grouped by dataset fingerprint, each group ranked by ``metric``
    (`evalctl leaderboard`: every run of every group).

    With ``perturbation``: robustness runs instead, grouped by dataset and perturbation rate,
    ranked by ``metric`` under that perturbation (each row keeps its clean score, change and flip rate).
    Groups come newest first (by their newest run).
    """
    board = Board(metric, f"{PERTURBATION}{perturbation}@" if perturbation else OVERALL)
    stmt = board.ranked(_scored_runs())
    if perturbation:
        stmt = stmt.where(scores.c.subset.startswith(board.subset, autoescape=True))
    else:
        stmt = stmt.where(scores.c.subset == OVERALL)
    if fingerprint is not None:
        stmt = stmt.where(scores.c.dataset_fingerprint == fingerprint)
    with registry.database.read() as conn:
        rows = [decode_row(r) for r in conn.execute(stmt)]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = r["dataset_fingerprint"]
        if perturbation:
            rob = r["metrics"]["robustness"]
            r = {**r, "perturbed": rob["perturbations"][perturbation], "rate": rob["rate"]}
            key = f"{key} @ rate {rob['rate']}"
        groups.setdefault(key, []).append(r)
    newest = {k: max((r["created_at"], r["id"]) for r in g) for k, g in groups.items()}
    return {k: groups[k] for k in sorted(groups, key=newest.get, reverse=True)}


@dataclass
class BoardPage:
    rows: list[dict]  # runs with score, ci_low, ci_high, rank and ``versus`` (the test against the leader)
    total: int
    leader: dict | None


def board_page(db: Database, fingerprint: str, board: Board, limit: int = 50, offset: int = 0) -> BoardPage:
    """Ranks ``offset + 1`` to ``offset + limit`` of ``board`` on one dataset, each row tested
    against the leader (cluster/stats/compare.py ``versus_leader``)."""
    count = (
        select(func.count())
        .select_from(scores)
        .where(
            scores.c.dataset_fingerprint == fingerprint,
            scores.c.metric == board.metric,
            scores.c.subset == board.subset,
            scores.c.kind == board.kind,
        )
    )
    with db.read() as conn:
        rows = [decode_row(r) for r in conn.execute(board.page(fingerprint, limit, offset))]
        leader = rows[0] if rows and offset == 0 else None
        if leader is None:
            first = conn.execute(board.page(fingerprint, 1, 0)).first()
            leader = decode_row(first) if first else None
        total = conn.execute(count).scalar_one()
    for rank, r in enumerate(rows, offset + 1):
        r["rank"] = rank
        r["versus"] = None
        if leader is not None and r["id"] != leader["id"]:
            r["versus"] = versus_leader(leader["score"], _ci(leader), r["score"], _ci(r))
    return BoardPage(rows, total, leader)


def _ci(row: dict) -> tuple[float, float] | None:
    return None if row["ci_low"] is None else (row["ci_low"], row["ci_high"])


def board_datasets(db: Database, board: Board, limit: int = 50, offset: int = 0) -> tuple[list[dict], int]:
    """The datasets ``board`` has scores on, the most recently evaluated first: fingerprint, the
    number of runs ranked, the best score, the newest run's time and its dataset path; and how many
    datasets there are."""
    best = (func.max if board.higher else func.min)(scores.c.value)
    where = (scores.c.metric == board.metric, scores.c.subset == board.subset, scores.c.kind == board.kind)
    groups = (
        select(
            scores.c.dataset_fingerprint,
            func.count().label("runs"),
            best.label("best"),
            func.max(scores.c.created_at).label("latest"),
            func.count().over().label("datasets"),  # all the groups, before the LIMIT: one scan
        )
        .where(*where)
        .group_by(scores.c.dataset_fingerprint)
        .order_by(func.max(scores.c.created_at).desc(), scores.c.dataset_fingerprint.desc())
        .limit(page_limit(limit))
        .offset(max(0, int(offset)))
        .subquery()
    )
    path = (
        select(runs.c.dataset_path)
        .where(runs.c.dataset_fingerprint == groups.c.dataset_fingerprint)
        .order_by(runs.c.created_at.desc(), runs.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    stmt = select(groups, path.label("dataset_path"))
    stmt = stmt.order_by(groups.c.latest.desc(), groups.c.dataset_fingerprint.desc())
    with db.read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
        if not rows and offset:  # past the last page: the count alone
            total = select(func.count(func.distinct(scores.c.dataset_fingerprint))).where(*where)
            return rows, conn.execute(total).scalar_one()
    return rows, rows[0]["datasets"] if rows else 0


def board_subsets(db: Database, fingerprint: str, metric: str) -> list[str]:
    """The subsets ``metric`` was scored on for this dataset: "" (all rows), slices, perturbations."""
    stmt = (
        select(scores.c.subset)
        .where(scores.c.dataset_fingerprint == fingerprint, scores.c.metric == metric)
        .distinct()
        .order_by(scores.c.subset)
        .limit(500)
    )
    with db.read() as conn:
        return list(conn.execute(stmt).scalars())
