"""Mergeable statistics to bytes and back, without pickle: what an evaluation part file's footer holds.

A part file (cluster/evaluation/sink.py) carries the statistics of its rows; the driver reads them
back when it merges, and again when a run is resumed, possibly from a shared bucket. Unpickling
such bytes could run any code, so this format holds data only: a JSON tree plus numpy arrays, in
one ``np.savez_compressed`` archive read with ``allow_pickle=False``.

Encoded: None, bool, int (any size), float (exactly: JSON writes repr), str, bytes, numpy arrays
(numeric, bool, unicode; object arrays of Python ints or of str), numpy scalars, list, tuple, dict
(any encodable keys) and instances of dataclasses registered here by the module that defines them
(``register(Stats)``). Anything else raises TypeError when written, and an unknown type name
raises ValueError when read: a decoder never imports or calls anything it was not told about.

    >>> import numpy as np
    >>> decode(encode({"n": 3, "c": np.arange(4), (0, 1): [1.5, None]}))["c"].tolist()
    [0, 1, 2, 3]
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import numpy as np

_TYPES: dict[str, type] = {}
TREE = "__tree__"


def register(*classes: type) -> None:
    """Allow these dataclasses in encoded statistics (call it where each class is defined)."""
    for cls in classes:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} is not a dataclass")
        _TYPES[_name(cls)] = cls


def encode(obj: Any) -> bytes:
    arrays: list[np.ndarray] = []
    tree = json.dumps(_enc(obj, arrays), separators=(",", ":")).encode()
    buf = io.BytesIO()
    named = {f"a{i}": a for i, a in enumerate(arrays)}
    np.savez_compressed(buf, **{TREE: np.frombuffer(tree, np.uint8)}, **named)
    return buf.getvalue()


def decode(data: bytes) -> Any:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        tree = json.loads(z[TREE].tobytes())
        arrays = [z[f"a{i}"] for i in range(len(z.files) - 1)]
    return _dec(tree, arrays)


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _enc(x: Any, arrays: list) -> Any:
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, np.generic):
        return {"s": _array(np.asarray(x), arrays)}
    if isinstance(x, np.ndarray):
        return _enc_array(x, arrays)
    if isinstance(x, bytes):
        return {"y": _array(np.frombuffer(x, np.uint8), arrays)}
    if isinstance(x, (list, tuple)):
        return {"l" if isinstance(x, list) else "t": [_enc(v, arrays) for v in x]}
    if isinstance(x, dict):
        return {"d": [[_enc(k, arrays), _enc(v, arrays)] for k, v in x.items()]}
    if dataclasses.is_dataclass(x) and _TYPES.get(_name(type(x))) is type(x):
        fields = {f.name: _enc(getattr(x, f.name), arrays) for f in dataclasses.fields(x)}
        return {"c": _name(type(x)), "f": fields}
    raise TypeError(
        f"cannot encode {type(x).__name__} in statistics (register dataclasses with codec.register)"
    )


def _enc_array(a: np.ndarray, arrays: list) -> Any:
    if a.dtype != object:
        return {"a": _array(a, arrays)}
    flat = a.ravel().tolist()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        return {"oi": flat, "shape": list(a.shape)}  # exact big integers (e.g. exact float sums)
    if all(isinstance(v, str) for v in flat):
        return {"os": flat, "shape": list(a.shape)}
    raise TypeError("cannot encode an object array unless it holds only ints or only strs")


def _array(a: np.ndarray, arrays: list) -> int:
    arrays.append(a)
    return len(arrays) - 1


def _dec(t: Any, arrays: list) -> Any:
    if not isinstance(t, dict):
        return t
    if "a" in t:
        return arrays[t["a"]]
    if "s" in t:
        return arrays[t["s"]][()]
    if "y" in t:
        return arrays[t["y"]].tobytes()
    if "l" in t or "t" in t:
        items = [_dec(v, arrays) for v in t.get("l", t.get("t"))]
        return items if "l" in t else tuple(items)
    if "d" in t:
        return {_dec(k, arrays): _dec(v, arrays) for k, v in t["d"]}
    if "oi" in t or "os" in t:
        out = np.empty(len(t.get("oi", t.get("os"))), dtype=object)
        out[:] = t.get("oi", t.get("os"))
        return out.reshape(t["shape"])
    if "c" in t:
        return _dec_dataclass(t, arrays)
    raise ValueError(f"not an encoded statistic: {sorted(t)}")


def _dec_dataclass(t: dict, arrays: list) -> Any:
    cls = _TYPES.get(t["c"])
    if cls is None:
        raise ValueError(f"statistics of unknown type {t['c']!r} (not registered with codec.register)")
    names = {f.name for f in dataclasses.fields(cls)}
    if set(t["f"]) != names:
        raise ValueError(
            f"statistics of type {t['c']!r} have fields {sorted(t['f'])}, expected {sorted(names)}"
        )
    obj = object.__new__(cls)  # fields set as stored: no __init__/__post_init__ runs on read data
    for name, value in t["f"].items():
        object.__setattr__(obj, name, _dec(value, arrays))
    return obj
