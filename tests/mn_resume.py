"""The killed-driver test of tests/test_multinode.py: one sweep whose driver is SIGKILLed at
chosen moments, each kill followed by `evalctl sweep resume` in a new driver process, which
the next kill ends in turn; the last resume runs to the end and everything is checked then.

Chained this way, a kill costs one driver start and one start of the trial's actor (torch and
transformers imports), not a new sweep's driver and actors plus the resume's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cluster.registry.record import Registry
from cluster.specs.workloads import SweepSpec
from tests.conftest import ROOT
from tests.mn_helpers import result_rows

ROUND_TIMEOUT_S = 600
# A resumed driver started ahead: `python -m jobs.cli ARGS` once a line comes on stdin, with the
# imports a driver makes before its first report done while the driver before it still runs.
SPARE = (
    "import runpy, sys\n"
    "import pandas, pyarrow.parquet, ray, ray.tune\n"
    "import cluster.data.scan, jobs.cli, jobs.sweep, cluster.tune.state, cluster.tune.trial, cluster.tune.callbacks, cluster.tune.setup\n"
    "sys.stdin.readline()\n"
    "runpy.run_module('jobs.cli', run_name='__main__', alter_sys=True)\n"
)  # a driver's start and its next validation, on a loaded machine


def moments(n: int = 20) -> list[tuple[int, float]]:
    """The kills: after the sweep's m-th validation is recorded, then a delay (s); 0 is right
    after the checkpoint that came with that validation."""
    return [(1 + k * 3 // 2, (0.0, 0.05, 0.3)[k % 3]) for k in range(n)]


def small_splits(sample_dir: Path, out: Path, train: int = 128, validation: int = 24) -> Path:
    """``train`` and ``validation`` rows of the sample corpus as files of their own, which a
    driver reads whole: a subsample (``max_train_rows``) would import scikit-learn at every
    driver start (2.5 s of CPU here)."""
    import pandas as pd

    out.mkdir()
    for name, n in (("train", train), ("validation", validation)):
        pd.read_parquet(sample_dir / f"{name}.parquet").sample(n, random_state=0).to_parquet(
            out / f"{name}.parquet"
        )
    return out


class KillChain:
    """A sweep's drivers, each killed at its moment; ``rounds`` holds each kill's figures."""

    def __init__(self, spec: SweepSpec, work: Path, address: str):
        self.spec, self.address = spec, address
        self.storage = Path(spec.storage_path)
        self.exp = self.storage / spec.name
        self.cfg = work / f"{spec.name}.json"
        self.cfg.write_text(spec.model_dump_json())
        self.logs = work / "drivers"
        self.logs.mkdir()
        self.rounds: list[dict] = []
        self.rows_at_kill: list[dict[str, list]] = []  # per kill: trial directory -> result rows
        self.current: subprocess.Popen | None = None  # the driver of the round under way
        self.spare: subprocess.Popen | None = None  # the next driver, started ahead

    def rows(self) -> dict[str, list[dict]]:
        return {d.name: result_rows(d) for d in self.exp.glob("*") if d.is_dir()}

    def _command(self, k: int) -> list[str]:
        """The first driver starts the sweep; every later one resumes it, as a user would."""
        if k == 0:
            args = ["-m", "jobs.cli", "sweep", "--config", str(self.cfg), "--address", self.address]
        else:
            args = ["-c", SPARE, "sweep", "resume", self.spec.name, "--storage", str(self.storage)]
        return [sys.executable, *args]

    def _start(self, k: int) -> subprocess.Popen:
        env = {
            **os.environ,
            "RAY_ADDRESS": self.address,  # what `sweep resume` joins
            "TUNE_GLOBAL_CHECKPOINT_S": "1",  # a snapshot every second: the race is often open
            "EVALCLUSTER_LOG_LEVEL": "INFO",
        }
        with (self.logs / f"driver{k}.log").open("w") as out:
            return subprocess.Popen(
                self._command(k), cwd=ROOT, env=env, start_new_session=True, stdin=subprocess.PIPE,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill_next(self, after: int, delay: float, ahead: bool = True) -> dict:
        """Start the next driver (or let the one started ahead go), SIGKILL it once ``after``
        validations are recorded (+ ``delay`` s), or once it recorded one of its own if the
        sweep is past ``after``. ``ahead``: start the driver after it early."""
        k, before = len(self.rounds), _count(self.rows())
        target = max(after, before + 1)  # every resumed driver must record a validation itself
        t0 = time.time()
        proc, spare, self.spare = self.spare or self._start(k), self.spare is not None, None
        self.current = proc
        if k:  # its turn (one started ahead waited with its imports done); if it died, its log says why
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(b"go\n")
                proc.stdin.close()
        first = self._wait(proc, lambda n: n > before, t0)
        if ahead:
            self.spare = self._start(k + 1)  # the next driver imports while this one trains
        self._wait(proc, lambda n: n >= target, t0)
        time.sleep(delay)
        alive = proc.poll() is None  # (a driver that ended is reaped here: not killed below)
        _kill(proc)
        rows = self.rows()
        self.rows_at_kill.append(rows)
        figures = {
            "kill": k, "after": target, "delay_s": delay, "driver_alive": alive, "spare": spare,
            "recorded": f"{before}->{_count(rows)}", "first_report_s": first, "kill_s": round(time.time() - t0, 1),
            "finished_at_kill": [short_trial(t) for t in finished(rows)],
            "snapshot_named_missing": _len_or_cut(snapshot_misses(self.exp)),
        }  # fmt: skip
        self.rounds.append(figures)
        assert alive, (
            f"driver {k} exited (rc {proc.returncode}) before its kill: {_tail(self.logs / f'driver{k}.log')}; {self.rounds}"
        )
        return figures

    def close(self) -> None:
        """End the drivers still running: one a failed round left, one started ahead."""
        for proc in (self.current, self.spare):
            if proc is not None:
                _kill(proc)

    def _wait(self, proc, done, t0: float) -> float | None:
        """Seconds since ``t0`` until ``done(validations recorded)``; None if the driver exited first."""
        while not done(_count(self.rows())):
            if proc.poll() is not None:
                return None
            assert time.time() - t0 < ROUND_TIMEOUT_S, f"no progress in {ROUND_TIMEOUT_S} s; {self.rounds}"
            time.sleep(0.01)
        return round(time.time() - t0, 1)

    def check_finished(self, summary: dict, trials: int, reports_per_trial: int, outcome: str) -> None:
        """After the last resume: each trial recorded each of its validations once and reached its
        budget; a trial finished at a kill recorded nothing more afterwards (it did not run again)."""
        assert summary["trials"] == trials, outcome
        assert Registry().resolve_model("best")["id"] == summary["model_id"], outcome
        after = self.rows()
        by_trial: dict[str, list] = {}  # a trial the killed driver had only just started may
        for name, rows in after.items():  # restart in a new directory: its rows are the trial's
            by_trial.setdefault(trial_id(name), []).extend(rows)
        for t, rows in by_trial.items():
            steps = sorted(r["step"] for r in rows)
            assert steps == list(range(1, reports_per_trial + 1)), (
                f"trial {t} recorded steps {steps}; {outcome}"
            )
            assert max(r["epoch"] for r in rows) == 2.0, f"trial {t} did not finish; {outcome}"
        for k, at_kill in enumerate(self.rows_at_kill):
            for t in finished(at_kill):
                assert len(after[t]) == len(at_kill[t]), (
                    f"trial {t}, finished at kill {k}, ran again; {outcome}"
                )

    def figures(self, total_s: float) -> str:
        firsts = [r["first_report_s"] for r in self.rounds[1:]]  # resumed drivers only
        kills = [r["kill_s"] for r in self.rounds]
        return (
            f"{len(self.rounds)} kills in {total_s:.0f} s; a driver's start to its kill {min(kills):.0f}-"
            f"{max(kills):.0f} s (mean {sum(kills) / len(kills):.1f} s); a resumed driver's first "
            f"validation after {min(firsts):.0f}-{max(firsts):.0f} s; snapshots that named a deleted "
            f"checkpoint: {sum(r['snapshot_named_missing'] not in (0, 'cut') for r in self.rounds)}; "
            f"cut short by the kill: {sum(r['snapshot_named_missing'] == 'cut' for r in self.rounds)}"
        )


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the driver's whole process group (a lost laptop: nothing of it runs on), unless it
    has ended and been reaped already (its id may belong to another process by then)."""
    if proc.returncode is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _len_or_cut(misses: list | None) -> int | str:
    return "cut" if misses is None else len(misses)


def _count(rows: dict[str, list]) -> int:
    return sum(len(r) for r in rows.values())


def _tail(log: Path, lines: int = 40) -> str:
    return "".join(log.read_text(errors="replace").splitlines(keepends=True)[-lines:])


def finished(rows: dict[str, list]) -> list[str]:
    """Trial directories whose last recorded validation ends the trial's budget (epoch 2)."""
    return [t for t, r in rows.items() if r and r[-1]["epoch"] == 2.0]


def trial_id(name: str) -> str:
    return "_".join(name.split("_")[2:4])  # train_trial_<experiment>_<index>_...


def short_trial(name: str) -> str:  # a trial directory as the figures show it: id and start time
    return f"{trial_id(name)}@{name.rsplit('_', 1)[-1]}"


# ------------------------------------------------------------------ the experiment snapshot


def snapshot_view(exp: Path) -> dict[str, tuple[str, str | None]] | None:
    """trial id -> (status, latest checkpoint path) as the newest experiment snapshot has them
    (read with Tune's own loaders: what `Tuner.restore` would start from); None when the kill cut
    that snapshot short. Tune copies its snapshot to storage by truncating and rewriting the file
    (pyarrow.fs.copy_files), so a driver killed mid-copy leaves it empty or partial: the state
    `sweep resume` repairs first (cluster/tune/state.py), and this test then goes on through."""
    import json

    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint
    from ray.tune.experiment.trial import Trial
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    newest = _find_newest_experiment_checkpoint(str(exp))
    if newest is None:
        return {}
    try:
        state = _loads_with_cloudpickle(Path(newest).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):  # empty, or cut inside a character
        return None
    view = {}
    for json_state, run_metadata in state["trial_data"]:
        trial = Trial.from_json_state(json_state, stub=True)
        trial.restore_run_metadata(run_metadata)
        latest = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
        view[trial.trial_id] = (trial.status, latest.checkpoint.path if latest else None)
    return view


def snapshot_misses(exp: Path) -> list[str] | None:
    """Trials whose checkpoint the newest experiment snapshot names but storage no longer holds
    complete (num_to_keep deleted it after the snapshot): the race resuming from storage handles.
    None when the kill cut the snapshot short (:func:`snapshot_view`)."""
    import pyarrow.fs as pafs

    from cluster.train.checkpoint import complete_checkpoints

    def on_storage(trial: str) -> set[str]:
        dirs = [d for d in exp.glob(f"*{trial}*") if d.is_dir()]
        return (
            {p for p, _ in complete_checkpoints(pafs.LocalFileSystem(), str(dirs[0]))[0]} if dirs else set()
        )

    view = snapshot_view(exp)
    if view is None:
        return None
    return [t for t, (_, path) in view.items() if path and path not in on_storage(t)]
