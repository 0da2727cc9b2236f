"""Typer commands generated from a spec: one option per spec field, its default and help from the spec.

    evalctl evaluate --config eval.yaml --limit 100

reads ``eval.yaml`` into the spec's fields, then applies only the options typed
on the command line (an option left out never overrides the file), and
validates the result once (cluster/specs/parse.py: one-line errors naming the file
or the option). Workloads also take ``--address``/``--wait`` (submit as a Ray
job, jobs/submit.py) and ``--spec-json`` (what a submitted job runs with).
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import typer
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from cluster.specs.parse import Key, Spec, load_spec, load_yaml, merge

ROOT = Path(__file__).resolve().parent.parent
_LOW, _HIGH = ((Ge, "<="), (Gt, "<")), ((Le, "<="), (Lt, "<"))  # a field's range, as --help shows it
TYPED = ("COMMANDLINE", "ENVIRONMENT")  # parameter sources that count as typed by the user
ADDRESS_HELP = "http://HEAD:8265 submits a Ray job (or RAY_ADDRESS)."
WAIT_HELP = "With --address: stream the job's logs, exit with its outcome."


@dataclass(frozen=True)
class Option:
    """One command-line option (or argument) standing for one spec field."""

    key: Key  # the field's place in the spec, e.g. ("data", "text_column")
    flag: str  # "--text-column"; "" for a positional argument
    field: FieldInfo

    @property
    def name(self) -> str:
        """The Python parameter name typer sees (unique per command)."""
        return "_".join(self.key) if self.flag == "" else self.flag.lstrip("-").replace("-", "_")

    @property
    def help(self) -> str:
        """The field's description and its range, e.g. "Passes over the data. [1 <= x <= 1000]"."""
        bound = {
            type(m): getattr(m, type(m).__name__.lower())  # Ge(ge=1) -> 1
            for m in self.field.metadata
            if isinstance(m, (Ge, Gt, Le, Lt))
        }
        low = next((f"{_num(bound[k])} {op} " for k, op in _LOW if k in bound), "")
        high = next((f" {op} {_num(bound[k])}" for k, op in _HIGH if k in bound), "")
        if low and not high:  # "x >= 1" reads better than "1 <= x"
            value, op = low.split()
            low, high = "", f" {op.replace('<', '>')} {value}"
        text = self.field.description or ""
        return f"{text} [{low}x{high}]" if low or high else text

    @property
    def default(self) -> Any:
        """The spec's default (what --help shows), None for a required field."""
        if self.field.is_required():
            return None
        return self.field.get_default(call_default_factory=True)


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def options(cls: type[Spec], keys: Sequence[str], flags: dict[str, str] | None = None) -> list[Option]:
    """Options for ``keys`` of ``cls``: dotted field names; ``"data.*"`` = every field of ``data``,
    ``"*"`` = every top-level field that is not a nested spec (each field once, first mention wins).

    The flag is ``--`` + the field's last name with dashes, unless ``flags`` names another
    (``{"data.path": "--data"}``; ``""`` makes it a positional argument).
    """
    flags, out = flags or {}, {}
    for dotted in keys:
        parent, _, last = dotted.rpartition(".")
        model = _model_at(cls, parent)
        fields = model.model_fields
        names = [n for n in fields if not _nested(fields[n].annotation)] if last == "*" else [last]
        for name in names:
            key = (*parent.split("."), name) if parent else (name,)
            flag = flags.get(".".join(key), "--" + name.replace("_", "-"))
            out.setdefault(key, Option(key, flag, fields[name]))
    return list(out.values())


def _nested(tp: Any) -> bool:
    return any(_is_model(a) for a in _flat_args(tp))


def _model_at(cls: type[BaseModel], dotted: str) -> type[BaseModel]:
    for part in filter(None, dotted.split(".")):
        cls = next(a for a in _flat_args(cls.model_fields[part].annotation) if _is_model(a))
    return cls


def _flat_args(tp: Any) -> list:
    """The members of a union (None left out), or [tp]."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in get_args(tp) if a is not type(None)]
    return [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


# ------------------------------------------------------------------ building the command


@dataclass
class Workload:
    """How a generated command turns its input into a spec and runs it."""

    spec: type[Spec]
    options: list[Option]
    run: Callable[..., None]  # run(spec, **extras)
    module: str | None = None  # jobs.<name>: adds --address/--wait/--spec-json and Ray job submission
    config: bool = True  # a --config FILE option
    extras: Sequence[inspect.Parameter] = ()  # more parameters, passed to run() by name
    submit_argv: Sequence[str] = ()  # words before the options in the job's entrypoint
    # (spec, extras) -> (more entrypoint arguments, more job env vars) for a submitted job
    job_extras: Callable[[Spec, dict], tuple[list[str], dict[str, str]]] | None = None
    address_help: str = ADDRESS_HELP
    # resume(RUN, address=...): `--resume RUN` continues a recorded run instead of building a spec
    resume: Callable[..., None] | None = None


def spec_command(w: Workload, doc: str) -> Callable[..., None]:
    """A typer command function for ``w``: --config, one option per spec field, the extras."""

    def generated(ctx: typer.Context, **values: Any) -> None:
        if ctx.invoked_subcommand is not None:  # e.g. `evalctl sweep resume NAME`
            return
        if w.resume is not None and values.get("resume"):
            return _resume(w, ctx, values)
        spec = build_spec(w, ctx, values)
        extras = {p.name: values[p.name] for p in w.extras}
        if w.module:
            from cluster.ray.runtime import resolve_target

            if resolve_target(values["address"]).mode == "submit":  # jobs.submit loads httpx: only then
                from jobs.submit import submit_if_remote

                argv, env = w.job_extras(spec, extras) if w.job_extras else ([], {})
                argv = [*w.submit_argv, *argv]
                if submit_if_remote(w.module, spec, values["address"], values["wait"], argv=argv, env=env):
                    return
            extras["address"] = values["address"]
        w.run(spec, **extras)

    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    params += [_parameter(o) for o in w.options] + list(w.extras) + _common(w)
    generated.__signature__ = inspect.Signature(params)
    generated.__annotations__ = {p.name: p.annotation for p in params}
    generated.__doc__ = doc
    return generated


def _resume(w: Workload, ctx: typer.Context, values: dict[str, Any]) -> None:
    """``--resume RUN``: the run's recorded spec, nothing else; it runs here (or joins HOST:6379)."""
    from cluster.errors import UserError

    typed = [o.flag or o.name for o in w.options if _source(ctx, o.name) in TYPED]
    typed += ["--config"] * bool(values.get("config")) + ["--spec-json"] * bool(values.get("spec_json"))
    if typed:
        raise UserError(f"--resume takes the run's recorded settings; drop {', '.join(typed)}")
    address = values.get("address")
    if address and address.startswith(("http://", "https://")):
        raise UserError(
            "--resume runs where this command runs (or joins HOST:6379); to resume on a cluster, "
            f"submit `python -m {w.module} --resume {values['resume']}` as a Ray job"
        )
    w.resume(values["resume"], address=address)


def build_spec(w: Workload, ctx: typer.Context, values: dict[str, Any]) -> Spec:
    """The spec from --spec-json or --config (else the spec's own defaults), then the typed options on
    top."""
    typed = {o.key: values[o.name] for o in w.options if _source(ctx, o.name) in TYPED}
    base, where = {}, "options"
    if values.get("spec_json"):
        base, where = _json(values["spec_json"]), "--spec-json"
    elif values.get("config"):
        path = Path(values["config"])
        base, where = load_yaml(path), path.name
    # An error in a typed value names its option; with no file every value is an option.
    named = {o.key: o.flag or o.name.upper() for o in w.options if o.key in typed or where == "options"}
    return load_spec(w.spec, merge(base, typed), where=where, flags=named)


def _source(ctx: typer.Context, name: str) -> str:
    source = ctx.get_parameter_source(name)
    return source.name if source is not None else "DEFAULT"


def _json(text: str) -> dict:
    from cluster.errors import UserError

    def unique(pairs: list[tuple[str, Any]]) -> dict:
        keys = [k for k, _ in pairs]
        if dup := next((k for i, k in enumerate(keys) if k in keys[:i]), None):
            raise UserError(f"--spec-json: duplicate key {dup!r}; write each key once")
        return dict(pairs)

    try:
        data = json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as exc:
        raise UserError(f"--spec-json is not valid JSON ({exc.msg} at character {exc.pos})") from exc
    if not isinstance(data, dict):
        raise UserError("--spec-json must be a JSON object")
    return data


def _parameter(o: Option) -> inspect.Parameter:
    annotation, metavar = _cli_type(o.field.annotation)
    if o.flag == "":
        default = ... if o.field.is_required() else o.default
        info = typer.Argument(default, help=o.help, metavar=metavar, show_default=False)
    else:
        flag = f"{o.flag}/--no-{o.flag[2:]}" if annotation is bool else o.flag
        default = None if metavar == "METRIC=VALUE" else o.default  # a repeatable option starts empty
        info = typer.Option(default, flag, help=o.help, metavar=metavar)
    return inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


def _cli_type(tp: Any) -> tuple[Any, str | None]:
    """What typer parses an option as: plain scalars as themselves, the rest as text for pydantic."""
    optional = type(None) in get_args(tp)
    args = _flat_args(tp)
    base = args[0] if len(args) == 1 else None
    while get_origin(base) is typing.Annotated:
        base = get_args(base)[0]
    if get_origin(base) is Literal:  # the spec validates it (with "did you mean"); its help lists the values
        return (str | None if optional else str), None
    if base in (int, float, str, bool):
        return (base | None if optional else base), None
    if get_origin(base) is dict:  # conditions: --min f1_macro=0.75 --min accuracy=0.8 (the spec parses them)
        return list[str] | None, "METRIC=VALUE"
    return str | None, "TEXT"


def _common(w: Workload) -> list[inspect.Parameter]:
    """--config, and for Ray job workloads --address, --wait and --spec-json."""

    def opt(name: str, annotation: Any, info: Any) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)

    out = []
    if w.resume is not None:
        help_ = (
            "Continue the run RUN whose driver died (its recorded settings; rows already written are kept)."
        )
        out.append(opt("resume", str | None, typer.Option(None, metavar="RUN", help=help_)))
    if w.config:
        help_ = "YAML spec (without one: the defaults shown below); typed options override it."
        out.append(opt("config", Path | None, typer.Option(None, help=help_)))
    if w.module:
        out += [
            opt("address", str | None, typer.Option(None, help=w.address_help)),
            opt("wait", bool, typer.Option(False, help=WAIT_HELP)),
            opt("spec_json", str | None, typer.Option(None, hidden=True, help="A validated spec as JSON.")),
        ]
    return out
