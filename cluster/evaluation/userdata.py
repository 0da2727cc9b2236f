"""A user's own ``ray.data.Dataset`` as the pipeline's input (the Python API, cluster/evaluation/api.py).

The dataset's columns are renamed to the pipeline's (``text``/``image``, ``label``, ``id``,
``slice``: as the options name them) and every row gets ``row``: the dataset's own ``row`` column
when it has one (unique non-negative integers: positions or ids), else its position, numbered by
zipping it with ``ray.data.range`` (Ray Data keeps both in order; this counts the rows first, one
extra pass over a dataset that is not a plain read).
"""

from __future__ import annotations

import pyarrow as pa

from cluster.errors import UserError
from cluster.evaluation.task import ROW, EvalTask

NUMBER = "__evalcluster_position"  # the position column while numbering (never a user's name)


def user_dataset(ds, task: EvalTask):
    """``ds`` with the task's input columns renamed to the pipeline's, plus ``row``."""
    import ray.data

    columns = task.input_columns()
    have = set(ds.columns() or [])
    missing = sorted(c for c in columns.values() if c not in have)
    if missing:
        raise UserError(
            f"the dataset has no column {', '.join(repr(c) for c in missing)}; its columns: "
            f"{', '.join(sorted(have)) or 'none'}"
        )
    if ROW not in have:
        ds = ds.zip(ray.data.range(ds.count()).rename_columns({"id": NUMBER}))
    own = ROW if ROW in have else NUMBER
    return ds.map_batches(
        _select, fn_kwargs={"columns": columns, "own": own}, batch_size=None, batch_format="pyarrow"
    )


def _select(batch: pa.Table, columns: dict[str, str], own: str) -> pa.Table:
    out = {ROW: batch[own].cast(pa.int64())}
    out.update({name: batch[source] for name, source in columns.items()})
    return pa.table(out)
