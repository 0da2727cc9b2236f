"""Where an evaluation's files go: ``--out DIR`` or the run's place in the artifact store.

    <dest>/predictions/     part files, written by the pipeline's workers straight to ``dest``
                            (docs/contracts.md: predictions, version 2)
    <dest>/_checkpoint/     Ray Data's checkpoint of the written rows while the run is unfinished:
                            what ``evalctl evaluate --resume RUN`` continues from; removed at the end
    <dest>/report.html, metrics.json   written locally (``local``: ``dest`` itself, or a staging
                            directory when ``dest`` is a URI), then published, metrics.json last

``dest`` must be a place every node of the cluster can reach: a directory on a shared filesystem,
or an object-store URI (the artifact store, e.g. ``s3://bucket/prefix``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.data.storage import join, resolve
from cluster.errors import UserError
from cluster.registry.artifacts import ArtifactStore, remove

if TYPE_CHECKING:
    from cluster.registry.record import Registry

PREDICTIONS = "predictions"  # the part files' directory (version 2)
OLD_PREDICTIONS = "predictions.parquet"  # version 1: one file in input order (earlier runs)
CHECKPOINT = "_checkpoint"
ARTIFACTS = ("metrics.json", PREDICTIONS, "report.html")
HELD = (*ARTIFACTS, OLD_PREDICTIONS)  # what makes --out "hold another run"
TEMPORARY = (CHECKPOINT, ".metrics.json.tmp")


@dataclass
class ArtifactTarget:
    """Where a run's artifacts are written (``local``) and where they are kept (``dest``: the same
    directory, or a URI in the artifact store that ``local``, a staging directory, is published to)."""

    run_id: str
    local: Path
    dest: str
    out: Path | None = None  # --out: held by this run while it runs (cluster/registry/outlock.py)
    staging: Path | None = None

    @property
    def remote(self) -> bool:
        return self.staging is not None

    @property
    def predictions(self) -> str:
        return join(self.dest, PREDICTIONS)

    @property
    def checkpoint(self) -> str:
        return join(self.dest, CHECKPOINT)

    def held(self, registry: Registry):
        from cluster.registry.outlock import hold

        return hold(self.out, self.run_id, registry) if self.out else contextlib.nullcontext()

    def clear(self) -> None:
        """Nothing of an earlier run here (an overwritten --out leaves nothing of its own behind)."""
        self.local.mkdir(parents=True, exist_ok=True)
        for name in (*HELD, *TEMPORARY):
            _remove(self.local / name)
        if self.remote:
            for name in (PREDICTIONS, CHECKPOINT):
                remove(join(self.dest, name))

    def discard(self) -> None:
        """A failed run leaves no artifacts (and no checkpoint) behind."""
        for name in (*HELD, *TEMPORARY):
            _remove(self.local / name)
        if self.remote:
            remove(self.dest)

    def cleanup(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)


def artifact_target(spec, run_id: str, registry: Registry, resuming: bool = False) -> ArtifactTarget:
    """--out DIR (held while the run writes it), else the run's place in the artifact store
    (EVALCLUSTER_ARTIFACTS: a directory, or a URI written through a local staging directory).
    ``resuming``: the directory holds this run's own unfinished files (not refused)."""
    out = prepare_out(spec, HELD, check=not resuming)
    if out is not None:
        return ArtifactTarget(run_id, out, str(out), out=out)
    store = ArtifactStore.from_env(registry.home)
    dest = store.run_location(run_id)
    if not store.remote:
        return ArtifactTarget(run_id, Path(dest), dest)
    store.check_writable()  # before the run is recorded: a bad bucket is one line, nothing recorded
    staging = registry.home / "staging" / run_id
    return ArtifactTarget(run_id, staging, dest, staging=staging)


def prepare_out(spec, artifacts: tuple[str, ...] = HELD, check: bool = True) -> Path | None:
    """The --out directory, refusing one that holds another run unless --overwrite."""
    if spec.out is None:
        return None
    if "://" in spec.out:
        raise UserError(
            f"--out {spec.out}: --out takes a local directory; runs go to the artifact store "
            "($EVALCLUSTER_ARTIFACTS, e.g. s3://bucket/prefix) when --out is not given"
        )
    out = Path(spec.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    held = [a for a in artifacts if (out / a).exists()]
    if check and held and not spec.overwrite:
        raise UserError(
            f"--out {out} already holds another run ({', '.join(held)}); "
            "choose another directory or pass --overwrite"
        )
    return out.resolve()


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def output_fs(location: str):
    """(pyarrow filesystem, path) of a directory the workers write to, created if local."""
    fs, path = resolve(location)
    if not location.startswith(("s3://", "gs://")):
        fs.create_dir(path, recursive=True)
    return fs, path


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()
