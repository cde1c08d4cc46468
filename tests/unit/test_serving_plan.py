"""The serving config's rules, the Serve config built from a spec, the input contract taken
from a model signature and the pipeline's schema, and what the ingress reads from a body
before it picks a version."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlplatform.serving.plan import ServingConfig, VersionSlot, application_config
from mlplatform.settings import load_settings
from mlplatform.spec import PipelineSpec, SchemaSpec
from serve.bodies import as_of, entity_keys, parse_feedback, subset
from serve.hosting import contract_for
from serve.protocols import RequestError

SHA = "ab" * 32


def _cfg(**kw: object) -> ServingConfig:
    return ServingConfig.model_validate({"pipeline": "p", "model_name": "p", **kw})


def _slot(v: str, w: int) -> dict:
    return {"version": v, "weight": w, "sha256": SHA}


def test_weights_sum_to_100_or_are_all_staged() -> None:
    assert _cfg(versions=[_slot("1", 90), _slot("2", 10)]).weights == {"1": 90, "2": 10}
    assert _cfg(versions=[_slot("1", 0)]).weights == {"1": 0}  # staged: loaded, no traffic
    with pytest.raises(ValidationError, match="sum to 100, got 95"):
        _cfg(versions=[_slot("1", 90), _slot("2", 5)])
    with pytest.raises(ValidationError, match="listed twice"):
        _cfg(versions=[_slot("1", 50), _slot("1", 50)])
    with pytest.raises(ValidationError, match="shadow v9 is not one of the live versions"):
        _cfg(versions=[_slot("1", 100)], shadow="9")
    with pytest.raises(ValidationError, match="never a share"):
        _cfg(versions=[_slot("1", 50), _slot("2", 50)], shadow="2")
    cfg = _cfg(versions=[_slot("1", 100), _slot("2", 0), _slot("3", 0)], champion="1", shadow="3")
    assert [cfg.variant(v) for v in ("1", "2", "3")] == ["champion", "idle", "shadow"]
    split = _cfg(versions=[_slot("1", 90), _slot("2", 10)], champion="1")
    assert split.variant("2") == "challenger"


def test_the_application_config_comes_from_the_deploy_section(tmp_path) -> None:  # noqa: ANN001
    spec = PipelineSpec.model_validate({
        "name": "shop", "source": {"path": "d", "entity_column": "id", "timestamp_column": "ts"},
        "deploy": {"autoscaling": {"min_replicas": 1, "max_replicas": 3}, "num_cpus": 0.25,
                   "max_queued_requests": 50}})
    settings = load_settings(env={"PLATFORM_HOME": str(tmp_path)})
    app = application_config(spec, _cfg(versions=[_slot("4", 100)], champion="4", generation=7), settings)
    assert (app["name"], app["route_prefix"], app["import_path"]) == ("shop", "/shop", "serve.app:build")
    [dep] = app["deployments"]
    assert dep["autoscaling_config"]["max_replicas"] == 3 and "num_replicas" not in dep
    assert dep["ray_actor_options"] == {"num_cpus": 0.25}
    assert dep["max_queued_requests"] == 50 and dep["backpressure_config"]["status_code"] == 503
    assert dep["user_config"]["generation"] == 7 and dep["user_config"]["versions"][0]["version"] == "4"
    assert PipelineSpec.model_validate(app["args"]["spec"]).deploy == spec.deploy  # the replica's copy
    assert app["runtime_env"]["env_vars"]["PLATFORM_HOME"] == str(tmp_path)
    with pytest.raises(ValueError, match="no deploy section"):
        application_config(spec.model_copy(update={"deploy": None}), _cfg(), settings)


def test_the_contract_takes_types_from_the_signature_and_nulls_from_the_schema() -> None:
    inputs = [{"name": "age", "type": "double", "required": True},
              {"name": "visits", "type": "long", "required": False},
              {"name": "plan", "type": "string", "required": True}]
    schema = SchemaSpec.model_validate({"columns": [
        {"name": "age", "type": "float", "max_null_fraction": 0.0},
        {"name": "plan", "type": "string", "max_null_fraction": 0.1}]})
    contract = contract_for(inputs, schema, deploy_strict=True, max_rows=10)
    assert [(c.name, c.datatype, c.nullable) for c in contract.columns] == [
        ("age", "FP64", False), ("visits", "INT64", True), ("plan", "BYTES", True)]
    loose = contract_for(inputs, None, deploy_strict=False, max_rows=10)
    assert all(c.nullable for c in loose.columns) and not loose.strict


def test_entity_keys_per_row_in_every_body_format() -> None:
    assert entity_keys({"entities": ["a", 7]}, "id") == ["a", "7"]
    assert entity_keys({"rows": [{"id": 1, "x": 1}, {"x": 2}]}, "id") == ["1", None]
    assert entity_keys({"columns": {"id": ["a", None], "x": [1, 2]}}, "id") == ["a", None]
    assert entity_keys({"rows": [{"x": 1}]}, None) == [None]
    for body, needle in [([1], "JSON object"), ({"rows": [], "entities": ["a"]}, "exactly one"),
                         ({"entities": []}, "non-empty"), ({"entities": [True]}, "True"),
                         ({"rows": [1]}, r"rows\[0\] is int"),
                         ({"columns": {"a": [1], "b": [1, 2]}}, "same length"),
                         ({}, "exactly one")]:
        with pytest.raises(RequestError, match=needle):
            entity_keys(body, "id")


def test_subset_as_of_and_feedback() -> None:
    body = {"columns": {"id": ["a", "b", "c"], "x": [1, 2, 3]}, "at": "2026-01-01T00:00:00Z"}
    assert subset(body, [0, 2]) == {"columns": {"id": ["a", "c"], "x": [1, 3]}, "at": body["at"]}
    assert subset({"rows": [{"a": 1}, {"a": 2}]}, [1]) == {"rows": [{"a": 2}]}
    assert as_of(body).isoformat() == "2026-01-01T00:00:00" and as_of({}) is None
    with pytest.raises(RequestError, match="'yesterday' is not an ISO timestamp"):
        as_of({"at": "yesterday"})
    assert parse_feedback({"request_id": "r1", "label": 1}, 10) == [{"request_id": "r1", "label": 1}]
    assert len(parse_feedback({"feedback": [{"request_id": "r1", "label": True}] * 3}, 10)) == 3
    for body, needle in [({"request_id": "", "label": 1}, "request_id"), ({"request_id": "r"}, "label"),
                         ({"request_id": "r", "label": 1, "x": 2}, "'x'"), ({"feedback": []}, "non-empty"),
                         ({"feedback": [{"request_id": "r", "label": 1}] * 11}, "over the limit")]:
        with pytest.raises(RequestError, match=needle):
            parse_feedback(body, 10)
    assert VersionSlot(version="1", weight=0, sha256=SHA).idle_until is None
