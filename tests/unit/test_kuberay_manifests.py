"""The KubeRay manifests under cluster/: valid against KubeRay's own v1 CRD schemas (kept as
data in cluster/kuberay/crds/), no credential written in them, the Ray version pyproject pins,
and the entrypoint and Serve application the platform itself submits."""

from __future__ import annotations

import copy
import functools
import gzip
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.specifiers import SpecifierSet

from mlplatform.serving.plan import ServingConfig, application_config
from mlplatform.settings import ENV_VARS, STORE_URL_KEYS, load_settings
from mlplatform.spec import PipelineSpec
from mlplatform.spec_loader import load_spec

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
MANIFESTS = {"RayCluster": "raycluster.yaml", "RayJob": "rayjob.yaml", "RayService": "rayservice.yaml"}
SECRET = "mlplatform-stores"
# An env var with one of these in its name holds a location or a credential: from a Secret only.
SENSITIVE = re.compile(r"URL|URI|PASSWORD|SECRET|KEY|TOKEN|CREDENTIAL", re.IGNORECASE)
# user:password@ in any URL, or a password written as a value.
CREDENTIAL_IN_TEXT = re.compile(r"\w+://[^\s/@:]+:[^\s/@]+@|password\s*[:=]\s*\S", re.IGNORECASE)
IMAGE_WORKDIR = "/app"  # cluster/Dockerfile's WORKDIR: where the repository lies in the image


def _load(kind: str) -> dict[str, Any]:
    return yaml.safe_load((KUBERAY / MANIFESTS[kind]).read_text())


def _strict(node: Any) -> Any:
    """The schema as `kubectl apply` (strict field validation) applies it: an object that lists
    its properties accepts no other field, unless Kubernetes says it keeps unknown fields.
    The CRD schemas never set additionalProperties false themselves (the API server prunes)."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def _validator(kind: str) -> jsonschema.Draft7Validator:
    # An OpenAPI v3 structural schema: Draft 7 reads all of it (it declares no $schema);
    # x-kubernetes-* keys are ignored, and int-or-string fields are spelled anyOf integer/string.
    base = KUBERAY / "crds" / f"{kind.lower()}.schema.json"
    raw = base.read_bytes() if base.exists() else gzip.decompress(base.with_suffix(".json.gz").read_bytes())
    schema = _strict(json.loads(raw))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _errors(kind: str, doc: dict[str, Any]) -> list[str]:
    return sorted(f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message[:200]}"
                  for e in _validator(kind).iter_errors(doc))


def _cluster_spec(kind: str, doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    return {"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"),
            "RayService": spec.get("rayClusterConfig")}[kind]


def _ray_containers(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _env_problems(doc: Any) -> list[str]:
    """Every env var, anywhere in a manifest, whose name says location or credential and whose
    value is written out instead of coming from a Secret."""
    problems: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            env = node.get("env")
            for var in env if isinstance(env, list) else []:
                if SENSITIVE.search(var["name"]) and ("value" in var or not (
                        var.get("valueFrom") or {}).get("secretKeyRef")):
                    problems.append(var["name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return problems


def _ray_pin() -> SpecifierSet:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [ray] = [d for d in deps if re.match(r"ray\b", d)]
    return SpecifierSet(re.sub(r"^ray(\[[^\]]*\])?", "", ray).split(";")[0].strip())


@pytest.mark.parametrize("kind", MANIFESTS)
def test_manifest_is_valid_against_the_kuberay_crd_schema(kind: str) -> None:
    doc = _load(kind)
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", kind)
    assert _errors(kind, doc) == []


def test_the_schema_check_can_fail() -> None:
    good = _load("RayCluster")
    assert _errors("RayCluster", good) == []
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["workerGroupSpecs"][0]["replicas"] = "two"
    assert any("replicas" in e and "integer" in e for e in _errors("RayCluster", wrong_type))
    missing = copy.deepcopy(good)
    del missing["spec"]["headGroupSpec"]
    assert any("'headGroupSpec' is a required property" in e for e in _errors("RayCluster", missing))
    typo = copy.deepcopy(good)
    typo["spec"]["rayVerison"] = typo["spec"].pop("rayVersion")
    assert any("rayVerison" in e for e in _errors("RayCluster", typo))
    bad_auth = copy.deepcopy(good)
    bad_auth["spec"]["authOptions"]["mode"] = "password"
    assert any("authOptions.mode" in e for e in _errors("RayCluster", bad_auth))
    service = _load("RayService")
    del service["spec"]["rayClusterConfig"]
    assert any("rayClusterConfig" in e for e in _errors("RayService", service))


@pytest.mark.parametrize("kind", MANIFESTS)
def test_no_credential_is_written_in_a_manifest(kind: str) -> None:
    text = (KUBERAY / MANIFESTS[kind]).read_text()
    assert not CREDENTIAL_IN_TEXT.search(text)
    doc = _load(kind)
    assert _env_problems(doc) == []
    store_vars = {ENV_VARS[key][0] for key in STORE_URL_KEYS}
    s3_vars = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    cluster = _cluster_spec(kind, doc)
    for container in _ray_containers(cluster):
        env = {v["name"]: v for v in container["env"]}
        assert store_vars | s3_vars <= set(env), container["name"]
        refs = {env[name]["valueFrom"]["secretKeyRef"]["name"] for name in store_vars | s3_vars}
        assert refs == {SECRET}
        # RAY_AUTH_MODE is explicit, and the mode KubeRay sets up the token for.
        assert env["RAY_AUTH_MODE"]["value"] == cluster["authOptions"]["mode"] == "token"
        assert container["image"] == "mlplatform:latest"
        assert container["resources"]["requests"] and container["resources"]["limits"]


def test_the_credential_check_catches_a_literal() -> None:
    doc = _load("RayCluster")
    env = doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    env.append({"name": "PGPASSWORD", "value": "hunter2"})
    env.append({"name": "PLATFORM_METADATA_URL", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}})
    # (the workers share the head's env list through a YAML anchor)
    assert set(_env_problems(doc)) == {"PGPASSWORD", "PLATFORM_METADATA_URL"}
    assert CREDENTIAL_IN_TEXT.search("value: postgresql://mlp:hunter2@db:5432/mlp")


def test_ray_version_is_the_one_pyproject_pins() -> None:
    pin = _ray_pin()
    versions = {kind: _cluster_spec(kind, _load(kind))["rayVersion"] for kind in MANIFESTS}
    assert set(versions.values()) == {"2.60.0"}, versions
    assert "2.60.0" in pin, pin
    lines = [ln.strip() for ln in (CLUSTER / "Dockerfile").read_text().splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    assert instructions[0].startswith("FROM "), "a Dockerfile starts with FROM"
    image = instructions[0].split()[1]
    assert re.fullmatch(r"rayproject/ray:2\.60\.0-py311", image), image
    assert any(re.search(r"pip install .*\.\[postgres\]", ln) for ln in instructions)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "postgres" in extras
    users = [ln.split()[1] for ln in instructions if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image runs as a non-root user"
    assert f"WORKDIR {IMAGE_WORKDIR}" in instructions


def test_the_rayjob_runs_what_platformctl_submit_runs() -> None:
    args = shlex.split(_load("RayJob")["spec"]["entrypoint"])
    assert args[:3] == ["python", "-m", "jobs.pipeline"]
    opts = dict(zip(args[3::2], args[4::2], strict=True))
    assert set(opts) <= {"--spec", "--base-dir", "--run-id", "--step"}
    spec_file = Path(opts["--spec"])
    assert spec_file.parent == Path(opts["--base-dir"])
    in_repo = ROOT / spec_file.relative_to(IMAGE_WORKDIR)
    assert in_repo.is_file(), in_repo


def test_the_rayservice_deploys_the_application_the_platform_deploys() -> None:
    doc = _load("RayService")
    serve_config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    assert serve_config["http_options"] == {"host": "0.0.0.0", "port": 8000}
    [app] = serve_config["applications"]
    head = _ray_containers(doc["spec"]["rayClusterConfig"])[0]
    env = {v["name"]: v["value"] for v in head["env"] if "value" in v}
    assert (env["PLATFORM_SERVE_HOST"], int(env["PLATFORM_SERVE_PORT"])) == ("0.0.0.0", 8000)
    spec = load_spec(ROOT / "jobs" / "examples" / "demo.yaml", env={"PLATFORM_HOME": env["PLATFORM_HOME"]})
    settings = load_settings(env={"PLATFORM_HOME": env["PLATFORM_HOME"]})
    expected = application_config(spec, ServingConfig(pipeline=spec.name, model_name=spec.name), settings)
    # The replicas take their environment from the pods (the Secret), not from a runtime_env.
    expected.pop("runtime_env")
    assert PipelineSpec.model_validate(app["args"].pop("spec")) == spec
    expected["args"].pop("spec")
    [dep] = app["deployments"]
    dep["user_config"] = ServingConfig.model_validate(dep["user_config"]).model_dump(mode="json")
    assert app == expected
