"""KubeRay manifests: strict CRD validation, serveConfigV2, entrypoints, image tags."""

import functools
import gzip
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.heavy  # strict validation against the large KubeRay CRDs takes CPU seconds each

ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "tests" / "data" / "kuberay-crds"  # KubeRay's own CRDs, gzipped (see its README.md)
K8S = ROOT / "k8s"
KIND_TO_CRD = {
    "RayCluster": "ray.io_rayclusters.yaml.gz",
    "RayJob": "ray.io_rayjobs.yaml.gz",
    "RayService": "ray.io_rayservices.yaml.gz",
}


def strict(schema: dict) -> dict:
    """The CRD's OpenAPI schema with unknown fields rejected, as `kubectl --validate=strict` does."""
    schema = dict(schema)
    if schema.get("x-kubernetes-int-or-string"):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in schema:
        schema["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
    if isinstance(schema.get("items"), dict):
        schema["items"] = strict(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = strict(schema["additionalProperties"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [strict(s) for s in schema[key]]
    return schema


@functools.cache  # parsing a CRD takes seconds; every manifest of a kind reuses it
def crd_schema(kind: str) -> dict:
    crd = yaml.load(gzip.decompress((CRDS / KIND_TO_CRD[kind]).read_bytes()), Loader=yaml.CSafeLoader)
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strict(v1["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is validated by the API server
    return schema


def manifests():
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield pytest.param(doc, id=f"{path.name}:{doc['kind']}")


def core_schema(kind: str) -> dict:
    """Strict schemas of the core kinds our manifests use (Service, StatefulSet, Deployment), built from
    the Kubernetes schemas that KubeRay's CRDs embed: a Service (RayCluster's headService), a pod
    template (headGroupSpec.template), a PersistentVolumeClaim spec (a pod volume's
    ephemeral.volumeClaimTemplate.spec), a label selector."""
    head = crd_schema("RayCluster")["properties"]["spec"]["properties"]["headGroupSpec"]["properties"]
    if kind == "Service":
        return {**head["headService"], "required": ["apiVersion", "kind", "metadata", "spec"]}
    template = head["template"]
    pod = template["properties"]["spec"]["properties"]
    claim = pod["volumes"]["items"]["properties"]["ephemeral"]["properties"]["volumeClaimTemplate"]
    affinity = pod["affinity"]["properties"]["podAffinity"]["properties"]
    selector = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["items"]["properties"][
        "labelSelector"
    ]
    if kind == "Deployment":
        return _workload("Deployment", {"replicas": {"type": "integer", "minimum": 0}, "selector": selector,
                                        "template": template}, ["selector", "template"])  # fmt: skip
    assert kind == "StatefulSet"
    spec = {
        "serviceName": {"type": "string"},
        "replicas": {"type": "integer", "minimum": 0},
        "selector": selector,
        "template": template,
        "volumeClaimTemplates": {"type": "array", "items": claim},
    }
    return _workload("StatefulSet", spec, ["selector", "template", "serviceName"])


def _workload(kind: str, spec: dict, required: list[str]) -> dict:
    """An apps/v1 ``kind`` whose spec has exactly the properties ``spec`` (strict)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "apps/v1"},
            "kind": {"const": kind},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": required,
                "properties": spec,
            },
        },
    }


@pytest.mark.parametrize("doc", list(manifests()))
def test_manifest_validates_strictly_against_kuberay_crd(doc):
    schema = crd_schema(doc["kind"]) if doc["kind"] in KIND_TO_CRD else core_schema(doc["kind"])
    jsonschema.validate(doc, schema)


def test_strict_validation_catches_a_misspelled_field():
    doc = yaml.safe_load((K8S / "ray-job.evaluate.yaml").read_text())
    doc["spec"]["shutdownAfterJobFinish"] = True
    with pytest.raises(jsonschema.ValidationError, match="shutdownAfterJobFinish"):
        jsonschema.validate(doc, crd_schema("RayJob"))
    service, stateful = yaml.safe_load_all((K8S / "postgres.yaml").read_text())
    stateful["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(jsonschema.ValidationError, match="readinesProbe"):
        jsonschema.validate(stateful, core_schema("StatefulSet"))
    service["spec"]["port"] = 5432
    with pytest.raises(jsonschema.ValidationError, match="'port'"):
        jsonschema.validate(service, core_schema("Service"))
    _, deployment = yaml.safe_load_all((K8S / "ui.yaml").read_text())
    deployment["spec"]["replica"] = 2
    with pytest.raises(jsonschema.ValidationError, match="'replica'"):
        jsonschema.validate(deployment, core_schema("Deployment"))


def pods(doc):
    spec = doc["spec"].get("rayClusterSpec") or doc["spec"].get("rayClusterConfig") or doc["spec"]
    yield spec["headGroupSpec"]["template"]["spec"]
    for group in spec["workerGroupSpecs"]:
        yield group["template"]["spec"]


@pytest.mark.parametrize("doc", [d for d in manifests() if d.values[0]["kind"] in KIND_TO_CRD])
def test_every_container_has_limits_non_root_and_token_auth(doc):
    for pod in pods(doc):
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]
            assert c["securityContext"]["runAsNonRoot"] is True
            env = {e["name"]: e for e in c["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "evalcluster-ray-token"
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts[env["EVALCLUSTER_HOME"]["value"]] in volumes_of(pod, "emptyDir")  # scratch only


@pytest.mark.parametrize("doc", [d for d in manifests() if d.values[0]["kind"] in KIND_TO_CRD])
def test_registry_and_artifacts_come_from_secrets_and_no_pod_shares_a_disk(doc):
    for pod in pods(doc):
        assert not volumes_of(pod, "persistentVolumeClaim")  # no SQLite (or anything) on a shared volume
        for c in pod["containers"]:
            env = {e["name"]: e for e in c["env"]}
            db_dir, db_file = env["EVALCLUSTER_DB_FILE"]["value"].rsplit("/", 1)
            mount = next(m for m in c["volumeMounts"] if m["mountPath"] == db_dir)
            assert mount["readOnly"] is True and db_file == "url"
            assert volumes_of(pod, "secret")[mount["name"]]["secretName"] == "evalcluster-db"
            assert volumes_of(pod, "secret")[mount["name"]]["defaultMode"] == 0o440
            assert env["EVALCLUSTER_ARTIFACTS"]["value"].startswith("s3://")
            for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
                assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "evalcluster-s3"
            for name, e in env.items():  # no secret written into a manifest
                if any(w in name for w in ("SECRET", "PASSWORD", "TOKEN", "KEY")):
                    assert "value" not in e and "secretKeyRef" in e["valueFrom"], name


def volumes_of(pod: dict, kind: str) -> dict:
    return {v["name"]: v[kind] for v in pod.get("volumes", []) if kind in v}


def test_in_cluster_postgres_is_a_non_root_statefulset_with_its_password_from_a_secret():
    service, stateful = yaml.safe_load_all((K8S / "postgres.yaml").read_text())
    spec, pod = stateful["spec"], stateful["spec"]["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"] == labels == service["spec"]["selector"]
    assert spec["serviceName"] == service["metadata"]["name"] and spec["replicas"] == 1
    (c,) = pod["containers"]
    assert c["image"] == "postgres:15" and pod["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e for e in c["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "evalcluster-postgres",
        "key": "password",
    }
    assert c["resources"]["limits"] and c["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]  # one writer: this pod
    assert {m["name"] for m in c["volumeMounts"]} == {claim["metadata"]["name"]}
    assert service["spec"]["ports"][0]["port"] == 5432


def test_cluster_has_cpu_and_gpu_groups_with_autoscaling():
    doc = [
        d for d in yaml.safe_load_all((K8S / "ray-cluster.yaml").read_text()) if d["kind"] == "RayCluster"
    ][0]
    assert doc["spec"]["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in doc["spec"]["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1" and gpu["image"].endswith("-gpu")
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_ray_service_embeds_serve_config_and_it_validates():
    from ray.serve.schema import ServeDeploySchema

    service = yaml.safe_load((K8S / "ray-service.yaml").read_text())
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    ServeDeploySchema.model_validate(embedded)


@pytest.mark.parametrize("name", ["ray-job.sweep.yaml", "ray-job.evaluate.yaml"])
def test_rayjob_entrypoint_parses_with_the_cli_parser(name):
    import importlib

    import typer

    doc = yaml.safe_load((K8S / name).read_text())
    assert doc["spec"]["shutdownAfterJobFinishes"] is True and doc["spec"]["backoffLimit"] >= 1
    assert doc["spec"]["ttlSecondsAfterFinished"] > 0
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[:2] == ["python", "-m"] and argv[2].startswith("jobs.")
    module = importlib.import_module(argv[2])
    target = getattr(module, "sweep_app", None) or module.command
    app = target if isinstance(target, typer.Typer) else typer.Typer()
    if not isinstance(target, typer.Typer):
        app.command()(target)
    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("entrypoint", argv[3:], resilient_parsing=False)  # raises on unknown options
    assert ctx.params


def test_image_tags_match_the_pinned_ray_version():
    import ray

    pin = re.search(r'"ray\[[^\]]+\]>=([\d.]+),<([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin and ray.__version__.startswith(pin.group(1))
    dockerfile = (K8S / "Dockerfile").read_text()
    assert f"rayproject/ray:{ray.__version__}-py311" in dockerfile
    for path in K8S.glob("*.yaml"):
        text = path.read_text()
        for version in re.findall(r"rayVersion: \"?([\d.]+)", text):
            assert version == ray.__version__, path.name
        for tag in re.findall(r"image: (evalcluster\S+)", text):
            assert f"ray{ray.__version__}" in tag, (path.name, tag)


def test_dashboard_is_a_non_root_deployment_on_the_team_record_with_its_tokens_from_a_secret():
    """k8s/ui.yaml: `evalctl ui` on 0.0.0.0 (which needs the access token, from a Secret), the registry
    URL and S3 keys from the same Secrets as the Ray pods, probes on /healthz, nothing secret inline."""
    import typer

    from jobs.ui_cli import command

    service, deployment = yaml.safe_load_all((K8S / "ui.yaml").read_text())
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"] == labels == service["spec"]["selector"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"]
    assert c["resources"]["limits"] and c["resources"]["requests"]
    argv = c["command"]
    assert argv[:4] == ["python", "-m", "jobs.cli", "ui"]
    app = typer.Typer()
    app.command()(command)
    params = typer.main.get_command(app).make_context("ui", argv[4:], resilient_parsing=False).params
    port = next(p for p in c["ports"] if p["name"] == "http")["containerPort"]
    assert params["host"] == "0.0.0.0" and params["port"] == port == service["spec"]["ports"][0]["port"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    env = {e["name"]: e for e in c["env"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    secrets = volumes_of(pod, "secret")
    for var, secret, key in (
        ("EVALCLUSTER_DB_FILE", "evalcluster-db", "url"),
        ("EVALCLUSTER_UI_TOKEN_FILE", "evalcluster-ui", "token"),
        ("EVALCLUSTER_UI_WRITE_TOKEN_FILE", "evalcluster-ui", "write_token"),
    ):
        folder, name = env[var]["value"].rsplit("/", 1)
        assert name == key and mounts[folder]["readOnly"] is True
        assert secrets[mounts[folder]["name"]] == {"secretName": secret, "defaultMode": 0o440}
    assert mounts[env["EVALCLUSTER_HOME"]["value"]]["name"] in volumes_of(pod, "emptyDir")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "evalcluster-s3"
    for name, e in env.items():
        if any(w in name for w in ("SECRET", "PASSWORD", "KEY")) or name.endswith("TOKEN"):
            assert "value" not in e, name
