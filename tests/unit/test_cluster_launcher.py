"""cluster/launcher/aws.yaml is a config `ray up` accepts: checked with Ray's own loader
(defaults filled in as `ray up` does) and its JSON schema, and holding what the platform
needs on a cluster (token auth, the dashboard on 127.0.0.1, the storage URI, no secret)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

LAUNCHER = Path(__file__).resolve().parents[2] / "cluster" / "launcher" / "aws.yaml"


def _validate(config: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_the_aws_launcher_config_passes_rays_schema() -> None:
    config = yaml.safe_load(LAUNCHER.read_text())
    _validate(config)
    broken = copy.deepcopy(config)
    broken["available_node_types"]["ray.worker.default"]["min_workers"] = "one"
    with pytest.raises(Exception, match="is not of type 'integer'"):
        _validate(broken)


def test_the_launcher_config_keeps_the_cluster_closed_and_secrets_out() -> None:
    text = LAUNCHER.read_text()
    config = yaml.safe_load(text)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in text
    init = " ".join(config["initialization_commands"])
    assert "RAY_AUTH_MODE=token" in init and "PLATFORM_STORAGE_URI=s3://" in init
    assert "secretsmanager" in init  # store URLs (with passwords) come from the secret, not this file
    assert not re.search(r"(postgres(ql)?|redis)://[^<\s]*:[^<\s]*@", text), "a password in the launcher file"
