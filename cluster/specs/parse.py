"""Reading specs: YAML, JSON and option overrides -> one validated pydantic model.

Every workload spec (cluster/specs/workloads.py) is a pydantic model with ``extra="forbid"``;
this module turns whatever the user gave into one, and pydantic's errors into
one line that names the place, the key and what is allowed:

    error: sweep.yaml: search.learnign_rate: unknown key (did you mean "learning_rate"?); allowed: ...
    error: --batch-size: must be >= 1, got 0

Path fields are marked in the specs (``Annotated[str, PathField(...)]``), so code that
must rewrite paths (job submission) finds them by name, never by guessing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from cluster.errors import UserError, did_you_mean

log = logging.getLogger(__name__)
S = TypeVar("S", bound="Spec")
Key = tuple[str, ...]  # a field's place in a spec, e.g. ("data", "text_column")


class Spec(BaseModel):
    """Base of every spec: unknown keys are errors; values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class PathField:
    """Marks a spec field as a path (``Annotated[str, PathField("input")]``).

    kind: "input" (must exist where the job runs), "output" (written by the job),
    "model" (a MODEL argument: a directory, or a name such as ``best``).
    """

    kind: Literal["input", "output", "model"]


# ------------------------------------------------------------------ loading


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _UniqueKeys(yaml.SafeLoader):
    """A SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base`: its keys may be overridden on purpose
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (list, dict)):
                    continue  # unhashable: the base class reports it
                if key in seen:
                    first = seen[key]
                    problem = f"duplicate key {key!r} (first on line {first + 1}); write each key once"
                    raise _DuplicateKey(None, None, problem, key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict:
    """The mapping in a YAML file; an empty or non-mapping file, or a key written twice, is a user error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeys)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as exc:
        raise UserError(f"{path.name}: line {exc.problem_mark.line + 1}: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if data is None:
        raise UserError(f"{path.name}: the file is empty; give at least the keys you mean to set")
    if not isinstance(data, dict):
        raise UserError(f"{path.name}: the top level must be a mapping of keys, got {_kind(data)}")
    return data


def load_spec(cls: type[S], data: Any, where: str = "spec", flags: dict[Key, str] | None = None) -> S:
    """Validate ``data`` into ``cls``; errors are one line naming ``where`` (or the --flag) and the key.

    ``flags``: the keys the user set with command-line options, by the option's name,
    so an error in one of them names the option instead of the file.
    """
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_errors(exc, cls, where, flags or {})) from exc


def load_spec_file(cls: type[S], path: str | Path) -> S:
    """A spec from a YAML file (errors name the file)."""
    return load_spec(cls, load_yaml(path), where=Path(path).name)


def merge(base: dict, overrides: dict[Key, Any]) -> dict:
    """``base`` (a nested mapping) with each key path in ``overrides`` set (nested dicts created)."""
    out = _deep_copy(base)
    for key, value in overrides.items():
        node = out
        for part in key[:-1]:
            child = node.get(part)
            node[part] = child = dict(child) if isinstance(child, dict) else {}
            node = child
        node[key[-1]] = value
    return out


def _deep_copy(d: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


# ------------------------------------------------------------------ path fields


def path_fields(spec: Spec, prefix: Key = ()) -> Iterator[tuple[Key, PathField, Any]]:
    """Every marked path field of ``spec`` (nested specs included): (key, marker, value)."""
    for name, info in type(spec).model_fields.items():
        value = getattr(spec, name)
        marker = next((m for m in info.metadata if isinstance(m, PathField)), None)
        if marker is not None:
            yield (*prefix, name), marker, value
        elif isinstance(value, Spec):
            yield from path_fields(value, (*prefix, name))


def replace_paths(spec: S, fn: Callable[[Key, PathField, str], str]) -> S:
    """A copy of ``spec`` with every set path field replaced by ``fn(key, marker, value)``."""
    changes = {key: fn(key, marker, value) for key, marker, value in path_fields(spec) if value}
    changes = {k: v for k, v in changes.items() if v != _get(spec, k)}
    if not changes:
        return spec
    return type(spec).model_validate(merge(spec.model_dump(mode="json"), changes))


def _get(spec: Spec, key: Key) -> Any:
    for part in key:
        spec = getattr(spec, part)
    return spec


# ------------------------------------------------------------------ one-line errors


def format_errors(exc: ValidationError, cls: type[BaseModel], where: str, flags: dict[Key, str]) -> str:
    """Pydantic's first error as ``WHERE: dotted.key: what is wrong`` (or ``--flag: ...``)."""
    errors = exc.errors(include_url=False)
    err = errors[0]
    key = _clean_loc(err["loc"])
    while err["type"] == "missing" and (model := _model_at(cls, key)) is not None:
        required = [n for n, f in model.model_fields.items() if f.is_required()]
        if not required:
            break
        key = (*key, required[0])  # a missing nested spec: name the field it needs (data -> data.path)
    place = _place(key, where, flags)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{place}: {_message(err, cls, key)}{more}"


# Union branches that pydantic puts in an error's location (the search-space tags).
_BRANCHES = {"fixed", "choice", "grid", "uniform", "loguniform", "randint"}


def _clean_loc(loc: tuple) -> Key:
    """Drop the union-branch tags pydantic puts in a location: ("search", "epochs", "fixed") and
    ("search", "lr", "uniform", "uniform", 0) name search.epochs and search.lr.uniform.0."""
    parts = [str(p) for p in loc if p != "[key]"]  # a mapping's key: the key itself names it
    return tuple(
        p
        for i, p in enumerate(parts)
        if not (p in _BRANCHES and (p == "fixed" or parts[i + 1 : i + 2] == [p]))
    )


def _place(key: Key, where: str, flags: dict[Key, str]) -> str:
    for n in range(len(key), 0, -1):
        if key[:n] in flags:
            return flags[key[:n]]
    return f"{where}: {'.'.join(key)}" if key else where


def _message(err: dict, cls: type[BaseModel], key: Key) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        allowed = _fields_at(cls, key[:-1])
        return f"unknown key{did_you_mean(key[-1], allowed)}; allowed: {', '.join(allowed)}"
    if kind == "missing":
        return "required, not given"
    if kind == "literal_error":
        choices = [c.strip(" '") for c in ctx.get("expected", "").replace(" or ", ",").split(",")]
        choices = [c for c in choices if c]
        return f"must be one of {', '.join(choices)}, got {value!r}{did_you_mean(str(value), choices)}"
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        op, name = bounds[kind]
        bound = f"{ctx[name]:g}" if isinstance(ctx[name], float) else ctx[name]
        return f"must be {op} {bound}, got {value!r}"
    if kind == "union_tag_not_found":
        return "give a value or one distribution as a one-key mapping, e.g. {choice: [16, 32]}"
    if kind == "finite_number":
        return f"must be a finite number, got {value!r}"
    if kind in ("too_short", "too_long"):
        return f"needs {_count(ctx)}, got {_kind(value)} of {ctx.get('actual_length')}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}, got {value!r}"
    if kind == "union_tag_invalid":
        return f"unknown distribution {ctx.get('tag')!r}; allowed: {', '.join(sorted(_BRANCHES - {'fixed'}))}"
    types = {
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "float_type": "a number",
        "float_parsing": "a number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "string_type": "a string",
        "model_type": "a mapping",
        "model_attributes_type": "a mapping",
        "dict_type": "a mapping",
        "list_type": "a list",
    }
    if kind in types:
        return f"must be {types[kind]}, got {_kind(value)} {value!r}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    return err["msg"][:1].lower() + err["msg"][1:]


def _count(ctx: dict) -> str:
    low, high = ctx.get("min_length"), ctx.get("max_length")
    if low is not None and low == high:
        return f"exactly {low} items"
    return f"at least {low} item(s)" if low is not None else f"at most {high} items"


def _fields_at(cls: type[BaseModel], key: Key) -> list[str]:
    """Field names of the (nested) model at ``key``; [] if it is not a model."""
    model = _model_at(cls, key)
    return list(model.model_fields) if model else []


def _model_at(cls: type[BaseModel], key: Key) -> type[BaseModel] | None:
    """The model class of the field at ``key`` (``()`` = ``cls``), or None when it is not a model."""
    for part in key:
        info = cls.model_fields.get(part)
        sub = getattr(info, "annotation", None) if info else None
        sub = next((a for a in getattr(sub, "__args__", ()) if isinstance(a, type)), sub)
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return None
        cls = sub
    return cls


def _kind(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
