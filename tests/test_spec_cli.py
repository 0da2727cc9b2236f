"""Commands generated from specs: option defaults and help are the spec's; typed options override --config."""

import json

import pytest
import typer
import yaml

from cluster.errors import UserError
from cluster.specs.workloads import EvaluateSpec, SweepSpec
from jobs import cli, deploy, evaluate, pretrain, sweep, team

COMMANDS = {
    "evaluate": evaluate.WORKLOAD,
    "sweep": sweep.WORKLOAD,
    "pretrain": pretrain.WORKLOAD,
    "serve deploy": deploy.WORKLOAD,
}


def click_command(*words):
    group = typer.main.get_command(cli.app)
    ctx = typer.Context(group)
    cmd = group
    for w in words:
        cmd = cmd.get_command(ctx, w)
    return cmd


@pytest.mark.parametrize("words", [("evaluate",), ("pretrain",), ("sweep",), ("serve", "deploy")])
def test_every_option_shows_the_specs_default_and_help(words):
    workload = COMMANDS[" ".join(words)]
    params = {p.name: p for p in click_command(*words).params}
    assert workload.options, words
    for opt in workload.options:
        param, field = params[opt.name], opt.field
        assert param.help.startswith(field.description), opt.key  # help written once, in the spec
        bounds = [m for m in field.metadata if type(m).__name__ in ("Ge", "Gt", "Le", "Lt")]
        assert param.help.endswith("]") == bool(bounds), opt.key  # and its range, from the field
        expected = None if field.is_required() else field.get_default(call_default_factory=True)
        if expected == {}:  # repeatable METRIC=VALUE options (a gate's conditions): not given = {}
            expected = None
        assert param.default == expected, opt.key


def test_every_scalar_spec_field_has_an_option():
    keys = {o.key for o in evaluate.WORKLOAD.options}
    nested = {"data", "gate"}  # sub-specs: their own fields are the options
    assert {(name,) for name in EvaluateSpec.model_fields if name not in nested} <= keys
    assert {("gate", name) for name in ("min", "max", "max_drop", "use_ci_lower", "baseline")} <= keys
    assert {
        ("data", name) for name in ("path", "text_column", "label_column", "id_column", "slice_column")
    } <= keys
    assert {o.flag for o in evaluate.WORKLOAD.options} >= {
        "--data",
        "--text-column",
        "--batch-size",
        "--workers",
    }


@pytest.mark.parametrize(
    "words, flags",
    [
        (("leaderboard",), {"--data", "--text-column", "--label-column", "--dataset", "--metric"}),
        (("data", "check"), {"--text-column", "--label-column", "--id-column"}),
        (("evaluate",), {"--data", "--text-column", "--label-column", "--id-column", "--slice-column"}),
        (("pretrain",), {"--data", "--text-column"}),
    ],
)
def test_dataset_commands_take_the_dataspec_options(words, flags):
    opts = {o for p in click_command(*words).params for o in p.opts}
    assert flags <= opts


def run_command(words, argv, monkeypatch):
    """Invoke a generated command in-process, capturing the spec it would run with."""
    seen = {}
    workload = COMMANDS[" ".join(words)]
    monkeypatch.setattr(workload, "run", lambda spec, **extras: seen.update(spec=spec, extras=extras))
    monkeypatch.setattr(workload, "module", None)  # no --address handling needed here
    cmd = click_command(*words)
    cmd.main(args=argv, standalone_mode=False)
    return seen["spec"]


def test_config_plus_typed_options_only(tmp_path, monkeypatch):
    f = tmp_path / "eval.yaml"
    f.write_text(
        yaml.safe_dump({"data": {"path": "x.parquet", "text_column": "tweet"}, "batch_size": 8, "limit": 50})
    )
    spec = run_command(("evaluate",), ["--config", str(f), "--limit", "100"], monkeypatch)
    # typed: limit; from the file: batch_size and text_column (untyped options never override it)
    assert (spec.limit, spec.batch_size, spec.data.text_column, spec.data.path) == (
        100,
        8,
        "tweet",
        "x.parquet",
    )


def test_spec_json_is_what_a_job_runs(monkeypatch):
    original = SweepSpec(name="s1", num_samples=3, search={"epochs": 1})
    spec = run_command(("sweep",), ["--spec-json", original.model_dump_json()], monkeypatch)
    assert spec == original
    with pytest.raises(UserError, match="--spec-json: num_samples: must be >= 1"):
        run_command(("sweep",), ["--spec-json", json.dumps({"num_samples": 0})], monkeypatch)


def test_rays_own_entrypoint_options_still_parse(monkeypatch):
    spec = run_command(
        ("evaluate",), ["--model", "best", "--data", "data/x.parquet", "--bootstrap", "0"], monkeypatch
    )
    assert spec.model == "best" and spec.data.path == "data/x.parquet" and spec.bootstrap == 0


def test_required_data_names_the_option(monkeypatch):
    with pytest.raises(UserError, match=r"^--data: required, not given$"):
        run_command(("evaluate",), ["--model", "best"], monkeypatch)


def test_leaderboard_with_unknown_metric_and_columns_without_data():
    for argv, message in [
        (["--metric", "f1_macr"], 'unknown metric "f1_macr" (did you mean "f1_macro"?)'),
        (["--text-column", "tweet"], "--data: required, not given"),
    ]:
        with pytest.raises(UserError) as err:
            click_command("leaderboard").main(args=argv, standalone_mode=False)
        assert message in str(err.value)


def test_compare_spec_refuses_a_metric_without_paired_ci():
    with pytest.raises(UserError, match="cannot compare on log_loss"):
        click_command("compare").main(args=["a", "b", "--metric", "log_loss"], standalone_mode=False)
    assert team.compare_command.__doc__.startswith("B vs A")


@pytest.mark.parametrize(
    "words, flags",
    [
        (
            ("evaluate",),
            "--model --data --text-column --label-column --id-column --slice-column --out --batch-size --workers "
            "--gpus-per-worker --precision --max-length --bootstrap --limit --seed --owner --overwrite "
            "--no-overwrite --address --wait --config",
        ),
        (("sweep",), "--config --name --num-samples --max-train-rows --owner --address --wait"),
        (
            ("pretrain",),
            "--data --text-column --model --epochs --mlm-probability --max-rows --batch-size --learning-rate "
            "--workers --out --owner --address --wait --config",
        ),
        (
            ("serve", "deploy"),
            "--model --replicas --autoscale --target-ongoing-requests --max-batch-size --batch-wait-ms --max-texts "
            "--max-chars --precision --cpus-per-replica --gpus-per-replica --host --port --address --wait "
            "--config --no-api-key",
        ),
        (("leaderboard",), "--data --dataset --metric --json"),
        (("compare",), "--metric --bootstrap --json"),
    ],
)
def test_every_earlier_option_name_still_works(words, flags):
    opts = {o for p in click_command(*words).params for o in (*p.opts, *p.secondary_opts)}
    assert set(flags.split()) <= opts, set(flags.split()) - opts
