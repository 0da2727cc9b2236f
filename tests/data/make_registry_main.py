"""How tests/data/registry_main_32d0bcc.db was made: main's registry (before SQLAlchemy) writing a
small team record, including an alias and an owner that today's listings must escape.

Reproduce (from the repository root)::

    mkdir -p /tmp/legacy/cluster && touch /tmp/legacy/cluster/__init__.py
    git show 32d0bcc:cluster/registry.py > /tmp/legacy/cluster/registry.py
    git show 32d0bcc:cluster/errors.py > /tmp/legacy/cluster/errors.py
    cp tests/data/make_registry_main.py /tmp/legacy/ && cd /tmp/legacy
    python make_registry_main.py home   # -> home/registry.db

(run from /tmp/legacy so that ``cluster`` is main's code, not this checkout's).
"""

import sys
from pathlib import Path

from cluster.registry.record import Registry

reg = Registry(Path(sys.argv[1]))
r1 = reg.start_run(
    "evaluate",
    {"model": "best", "data": {"path": "test.parquet"}},
    owner="ana",
    dataset_path="test.parquet",
    dataset_fingerprint="fp-aaaa",
    model_id="m-legacy-1",
    run_id="evaluate-20261128-100000-aaaaaa",
)
reg.finish_run(r1, metrics={"f1_macro": 0.71, "accuracy": 0.75, "n": 300}, artifact_path="/old/runs/a")
r2 = reg.start_run("sweep", {"name": "s1"}, owner="bo", name="s1", run_id="sweep-20261128-090000-bbbbbb")
reg.fail_run(r2, "ValueError: boom")
reg.start_run(
    "evaluate", {"model": "base"}, owner="[bold red]RED[/]\x1b[31m", run_id="evaluate-20261128-110000-cccccc"
)
m1 = reg.register_model(
    "/old/models/m1",
    run_id=r2,
    base_model="base",
    lineage={"sweep": "s1"},
    metrics={"f1_macro": 0.7},
    model_id="m-20261128-090500-111111",
)
m2 = reg.register_model("/old/models/m2", base_model="base", model_id="m-20261128-091000-222222")
reg.set_alias("best", m1)
reg.set_alias("serving", m2)
reg.set_alias("[/x]", m2)  # accepted by this code; markup in listings (issue 16.8)
r4 = reg.start_run(
    "evaluate",
    {"model": "serving"},
    owner="ana",
    dataset_fingerprint="fp-aaaa",
    model_id=m2,
    run_id="evaluate-20261128-120000-dddddd",
)
reg.finish_run(r4, metrics={"f1_macro": 0.73, "accuracy": 0.76, "n": 300}, artifact_path="/old/runs/d")
print(len(reg.list_runs()), "runs,", len(reg.list_models()), "models")
