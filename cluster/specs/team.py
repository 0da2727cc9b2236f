"""The specs of the team's record commands that rank and compare evaluations: `evalctl leaderboard`
and `evalctl compare` (jobs/team.py)."""

from __future__ import annotations

from pydantic import Field, model_validator

from cluster.data.perturb import Perturbation
from cluster.specs.fields import MAX_BOOTSTRAP, MAX_SEED, Metric
from cluster.specs.parse import Spec
from cluster.specs.search_space import Int
from cluster.specs.workloads import DataSpec
from cluster.stats.metrics import metric_names, paired_metrics


class LeaderboardSpec(Spec):
    """Which evaluations `evalctl leaderboard` ranks."""

    data: DataSpec | None = Field(None, description="Rank runs on this dataset (by its content fingerprint).")
    dataset: str | None = Field(None, description="Or give the dataset fingerprint directly.")
    metric: Metric = Field(
        "f1_macro", description="Ranking metric (its direction comes from the metric table)."
    )
    perturbation: Perturbation | None = Field(
        None, description="Rank robustness runs by their score under this perturbation (typo, case, ...)."
    )

    @model_validator(mode="after")
    def _one_dataset(self):
        if self.data is not None and self.dataset is not None:
            raise ValueError("give --data or --dataset, not both")
        if self.perturbation is not None and self.metric not in paired_metrics():
            raise ValueError(
                f"robustness runs are ranked by {', '.join(paired_metrics())}, not {self.metric}"
            )
        return self


class CompareSpec(Spec):
    """How `evalctl compare` compares two evaluations."""

    metric: Metric = Field("f1_macro", description="Metric of the one-line verdict.")
    bootstrap: Int = Field(
        1000, ge=1, le=MAX_BOOTSTRAP, description="Paired bootstrap replicates (the CIs need at least 1)."
    )
    seed: Int = Field(0, ge=0, le=MAX_SEED, description="Bootstrap seed.")

    @model_validator(mode="after")
    def _comparable(self):
        # Of any task: the runs' task picks the comparison. Translations are paired over sentences
        # (cluster/stats/translation_compare.py), though their corpus scores are not row sums.
        comparable = paired_metrics(None) + metric_names(task="translation", has_ci=True)
        if self.metric not in comparable:
            raise ValueError(f"cannot compare on {self.metric}; choose from {', '.join(comparable)}")
        return self
