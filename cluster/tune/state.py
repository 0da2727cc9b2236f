"""Before `sweep resume`: the killed driver's experiment state on storage, checked and repaired.

Why: Tune's driver saves its snapshot (``experiment_state-*.json``) and its search algorithm's
state (``basic-variant-state-*.json``, or ``search_gen_state-*.json`` + ``searcher-state-*.pkl``
for Optuna) atomically in a local staging directory, then copies them to storage with
``pyarrow.fs.copy_files``, which truncates each file on storage and then writes it. A driver
SIGKILLed during that copy leaves a file there empty or cut short (seen: a 0-byte
``basic-variant-state``). On restore, Tune fails to read it, logs "Failed to restore the run
state ... Restarting experiment" and starts the sweep anew with the tuner's unpickled search
algorithm (same trial-id prefix) and no ``param_space`` (Tune never pickles it): trials with an
empty config under the old trials' ids, each failing with ``KeyError: 'seed'``, while the
snapshot's trials are dropped.

So, before ``Tuner.restore``: the newest snapshot must be readable (else it is put back from the
killed driver's staged copy, when this machine ran that driver, else one clear error); a
damaged random/grid search state (unreadable, missing, or from another save than the snapshot)
is rebuilt from the spec by replaying its seeded draws up to the snapshot's trials (each
replayed trial must equal the snapshot's: same id, same config) and written back atomically;
a damaged Optuna state cannot be rebuilt (its model of the finished trials is in it) and is
refused with one clear line.

Everything is read through the signing filesystem (cluster/tune/signing.py): a state file whose
bytes this sweep's driver did not write is "damaged" (the newest snapshot and search state, as
above) or, any other, refused with one line; nothing unsigned is ever unpickled. A staged copy is
taken only from a file and directory of this user's that nobody else can write.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import tempfile
from pathlib import Path

from cluster.errors import UserError
from cluster.specs.workloads import SweepSpec

log = logging.getLogger(__name__)
SNAPSHOT = "experiment_state-*.json"
BASIC_VARIANT = "basic-variant-state-*.json"
OPTUNA = ("search_gen_state-*.json", "searcher-state-*.pkl")


def repair_experiment_state(
    spec: SweepSpec, path: str, trainable, key_file: str | Path | None = None
) -> None:
    """Check the experiment directory ``path`` (on storage) before Tune restores it: its signatures
    (``key_file``, default EVALCLUSTER_HOME's); rebuild a damaged random/grid search state in
    place, refuse anything else that is damaged or unsigned."""
    from cluster.registry.record import default_home
    from cluster.tune.signing import KEY_FILE

    fs, root, names = check_signatures(spec, path, key_file or default_home() / KEY_FILE)
    snap_name = _newest(names, SNAPSHOT)
    if snap_name is None:
        return  # nothing to restore: Tuner.can_restore said so already
    patterns = _search_patterns(spec)
    snapshot, why = _read(fs, f"{root}/{snap_name}", _load_snapshot)
    if snapshot is None:
        snapshot = _restore_staged_copy(fs, root, Path(path).name, snap_name)
        names = _names(fs, root)  # the staged search state came back with it
    if snapshot is None:
        raise UserError(
            f"sweep {spec.name}: its newest experiment snapshot {path}/{snap_name} is damaged ({why}), "
            f"as a driver killed while copying it to storage leaves it, and the killed driver's staged "
            f"copy is not on this machine; the sweep cannot be resumed: run it again under a new --name"
        )
    session = snap_name[len("experiment_state-") : -len(".json")]
    for pattern in patterns:
        # missing: the kill came before the copy reached it; Tune would then restore no search
        # state and silently never draw the trials the snapshot does not hold yet
        name = _newest(names, pattern) or pattern.replace("*", session)
        state, why = _read(fs, f"{root}/{name}", _load_pickle) if name in names else (None, "missing")
        held = len(snapshot["trial_data"])
        if state is not None and pattern == BASIC_VARIANT and _drawn(state) != held:
            # intact but from another save than the snapshot (the copy reached one, not the
            # other): restored as is, it would draw a trial id the snapshot holds, or skip one
            state, why = None, f"it has drawn {_drawn(state)} trials, the snapshot holds {held}"
        if state is not None:
            continue
        if pattern != BASIC_VARIANT:
            raise UserError(
                f"sweep {spec.name}: its Optuna search state {path}/{name} cannot be read ({why}) "
                f"and cannot be rebuilt from the trials; the sweep cannot be resumed: run it again under "
                f"a new --name"
            )
        log.warning("search state %s/%s: %s; rebuilt from the spec and the snapshot", path, name, why)
        _write_atomically(fs, f"{root}/{name}", rebuild_basic_variant(spec, snapshot, trainable, name))


def rebuild_basic_variant(spec: SweepSpec, snapshot: dict, trainable, file_name: str) -> bytes:
    """The random/grid search state the driver had when it wrote ``snapshot``: a generator made
    from the spec (same seed) that has drawn exactly the snapshot's trials, as Tune saves it."""
    from ray.tune.experiment import Experiment
    from ray.tune.experiment.trial import Trial

    from cluster.tune.search import param_space, search_alg

    trials = [Trial.from_json_state(state, stub=True) for state, _ in snapshot["trial_data"]]
    gen = search_alg(spec, spec.max_concurrent_trials or 1)
    gen._uuid_prefix = trials[0].trial_id.rsplit("_", 1)[0] + "_"  # Tune's prefix for this sweep
    with tempfile.TemporaryDirectory() as tmp:
        gen.add_configurations(
            Experiment(
                spec.name, trainable, config=param_space(spec), num_samples=spec.num_samples, storage_path=tmp
            )
        )
        for want in sorted(trials, key=lambda t: t.trial_id):
            got = gen.next_trial()
            gen._live_trials.clear()  # a max_concurrent limit must not stop the replay; set below
            if got is None or got.trial_id != want.trial_id or got.config != want.config:
                raise UserError(
                    f"sweep {spec.name}: its search state {file_name} is damaged and replaying the "
                    f"spec's draws does not give trial {want.trial_id} (got "
                    f"{got.trial_id if got else 'none'}): the sweep cannot be resumed: run it again "
                    f"under a new --name"
                )
        gen._live_trials = {t.trial_id for t in trials if t.status != Trial.TERMINATED}
        gen.save_to_dir(tmp, session_str="rebuilt")
        return (Path(tmp) / gen.CKPT_FILE_TMPL.format("rebuilt")).read_bytes()


def _search_patterns(spec: SweepSpec) -> tuple[str, ...]:
    return (BASIC_VARIANT,) if spec.search_alg in ("random", "grid") else OPTUNA


def saved_sweep(name: str, path: str, key_file: str | Path) -> bytes:
    """The bytes of the sweep's spec file (SPEC_FILE) in the experiment directory ``path``, checked
    like Tune's state (cluster/tune/signing.py) before anything of it is used."""
    from cluster.tune.signing import SPEC_FILE, UnsignedState, signed_filesystem

    fs, root = signed_filesystem(path, key_file)
    _require_signed(name, fs, root, path)
    try:
        with fs.open_input_stream(f"{root}/{SPEC_FILE}") as f:
            return f.readall()
    except UnsignedState as exc:
        raise UserError(f"sweep {name}: {exc}: not resumed") from exc


def check_signatures(spec: SweepSpec, path: str, key_file: str | Path) -> tuple:
    """Before anything of the experiment directory ``path`` is loaded: every signed state file but
    the newest snapshot and search state (which repair_experiment_state checks, then repairs or
    refuses) must carry this machine's signature, else one line. Returns (the signing
    filesystem, the directory on it, the names of its files)."""
    import pyarrow.fs as pafs

    from cluster.tune.signing import UnsignedState, is_signed, signed_filesystem

    fs, root = signed_filesystem(path, key_file)
    names = _names(fs, root)
    repairable = {_newest(names, p) for p in (SNAPSHOT, *_search_patterns(spec))}
    _require_signed(spec.name, fs, root, path)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    rels = [i.path[len(root) + 1 :] for i in infos if i.type == pafs.FileType.File]
    for rel in sorted(r for r in rels if is_signed(r) and r not in repairable):
        try:
            fs.handler.checked(f"{root}/{rel}")
        except UnsignedState as exc:
            raise UserError(f"sweep {spec.name}: {exc}: not resumed (Tune would unpickle it)") from exc
    return fs, root, names


def _require_signed(name: str, fs, root: str, path: str) -> None:
    """The experiment directory holds a signature ledger, and this machine the key to check it."""
    from cluster.tune.signing import LEDGER, driver_key

    if LEDGER not in _names(fs, root):
        raise UserError(
            f"sweep {name}: {path} holds no {LEDGER}: its pickled state was not signed (written "
            "before evalcluster signed it, or the ledger was removed) and is not loaded; run the sweep "
            "again under a new --name"
        )
    if driver_key(fs.handler.key_file) is None:
        raise UserError(
            f"sweep {name}: its state was signed where it ran; this machine has no "
            f"{fs.handler.key_file}: resume it there, or copy that key here (mode 0600)"
        )


def _drawn(state: dict) -> int:
    """Trials a saved BasicVariantGenerator has drawn (its trial iterators count from 0 on)."""
    return state["_iterators"][-1].counter if state.get("_iterators") else 0


def _restore_staged_copy(fs, root: str, exp_name: str, snap_name: str) -> dict | None:
    """The killed driver's own copy of the snapshot, if this machine ran it: Tune stages it in the
    Ray session's directory (``<ray tmp>/session_*/artifacts/<time>/<experiment>/driver_artifacts``)
    whole before copying it to storage. Put back on storage with the search state staged beside it
    (saved together), each atomically; returns the snapshot, or None."""
    tmp = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"
    for staged in sorted(tmp.glob(f"session_*/artifacts/*/{exp_name}/driver_artifacts/{snap_name}")):
        if not (_private(staged) and _private(staged.parent)):
            log.warning("staged copy %s: writable by others or not this user's; not used", staged)
            continue
        try:
            snapshot = _load_snapshot(staged.read_bytes())
        except Exception:  # noqa: BLE001 - a damaged staged copy is no better than none
            continue
        session = snap_name[len("experiment_state-") : -len(".json")]
        for pattern in (BASIC_VARIANT, *OPTUNA):
            beside = staged.parent / pattern.replace("*", session)
            if beside.is_file():
                _write_atomically(fs, f"{root}/{beside.name}", beside.read_bytes())
        _write_atomically(fs, f"{root}/{snap_name}", staged.read_bytes())
        log.warning(
            "experiment snapshot %s was damaged: put back from the driver's staged copy %s", snap_name, staged
        )
        return snapshot
    return None


# ------------------------------------------------------------------ files on storage


def _names(fs, root: str) -> list[str]:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return [i.base_name for i in infos if i.type == pafs.FileType.File]


def _newest(names: list[str], pattern: str) -> str | None:
    """The file Tune restores from: the greatest name (session timestamps sort in time order)."""
    return max(fnmatch.filter(names, pattern), default=None)


def _private(path: Path) -> bool:
    st = path.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _read(fs, fs_path: str, loader):
    """(the loaded content, None) or (None, why it cannot be read); unsigned bytes are never loaded."""
    from cluster.tune.signing import UnsignedState

    try:
        with fs.open_input_stream(fs_path) as f:
            data = f.readall()
    except UnsignedState as exc:
        return None, str(exc).split(": ", 1)[1]
    if not data:
        return None, "0 bytes"
    try:
        return loader(data), None
    except Exception as exc:  # noqa: BLE001 - any failure to parse is "damaged"; the reason is reported
        return None, f"{len(data)} bytes, unreadable: {type(exc).__name__}: {exc}"


def _load_snapshot(data: bytes) -> dict:
    from cluster.ray.compat import load_tune_snapshot

    state = load_tune_snapshot(data)
    if not state.get("trial_data"):
        raise ValueError("no trials in it")
    return state


def _load_pickle(data: bytes):
    import ray.cloudpickle as cloudpickle

    return cloudpickle.loads(data)


def _write_atomically(fs, fs_path: str, data: bytes) -> None:
    """Write beside, then rename over: a reader sees the old file or the new one, never half."""
    tmp = f"{fs_path.rsplit('/', 1)[0]}/.rebuilding-{fs_path.rsplit('/', 1)[1]}"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, fs_path)
