"""The ingress's traffic router: weighted shares on 10,000 sticky keys, the same answer from any
router and any process, minimal movement when weights change or a version is added, idle
(weight-0) versions never served, keyless random routing, shadow sampling, and the validation
of the weight table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from serve.routing import Router

ROOT = Path(__file__).resolve().parents[2]
KEYS = [f"customer-{i}" for i in range(10_000)]
N = len(KEYS)


def route(router: Router) -> dict[str, str]:
    return {k: router.choose(k) for k in KEYS}


def share(assignment: dict[str, str], version: str) -> float:
    return sum(v == version for v in assignment.values()) / len(assignment)


# -- sticky keys ---------------------------------------------------------------------------------

def test_share_follows_the_weights() -> None:
    assignment = route(Router({"3": 90, "4": 10}))
    assert set(assignment.values()) == {"3", "4"}
    assert share(assignment, "4") == pytest.approx(0.10, abs=0.015)


def test_same_key_same_version_on_every_call_and_every_router() -> None:
    first = route(Router({"3": 90, "4": 10}))
    assert route(Router({"3": 90, "4": 10})) == first
    # the order the table is written in does not matter either
    assert route(Router({"4": 10, "3": 90})) == first
    router = Router({"3": 90, "4": 10})
    assert all(router.choose(k) == first[k] for k in KEYS[:500] for _ in range(3))


def test_same_answers_in_another_process() -> None:
    """Replicas share no state: a fresh interpreter with a different hash seed (Python's own
    hash() is salted per process) must route every key the same way."""
    weights = {"3": 72, "4": 18, "5": 10}
    keys = KEYS[:300]
    here = [Router(weights).choose(k) for k in keys]
    code = ("import json, sys; from serve.routing import Router; "
            "w, keys = json.load(sys.stdin); r = Router(w); print(json.dumps([r.choose(k) for k in keys]))")
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps([weights, keys]), cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=60, check=True)
        assert json.loads(out.stdout) == here


def test_shifting_weight_moves_only_the_shifted_share() -> None:
    before = route(Router({"3": 90, "4": 10}))
    after = route(Router({"3": 80, "4": 20}))
    moves = Counter((before[k], after[k]) for k in KEYS if before[k] != after[k])
    assert set(moves) == {("3", "4")}, moves  # nobody leaves the growing version
    assert moves[("3", "4")] / N == pytest.approx(0.10, abs=0.015)
    assert share(after, "4") == pytest.approx(0.20, abs=0.015)


def test_shifting_weight_back_restores_the_original_assignment() -> None:
    original = route(Router({"3": 90, "4": 10}))
    route(Router({"3": 50, "4": 50}))
    assert route(Router({"3": 90, "4": 10})) == original


def test_adding_a_version_moves_keys_only_to_it() -> None:
    before = route(Router({"3": 80, "4": 20}))
    after = route(Router({"3": 72, "4": 18, "5": 10}))
    moved = [k for k in KEYS if before[k] != after[k]]
    assert {after[k] for k in moved} == {"5"}  # no key hops between the old versions
    assert len(moved) / N == pytest.approx(0.10, abs=0.015)
    # both old versions gave up their fair part (~10% of their own keys each)
    for old in ("3", "4"):
        theirs = [k for k in KEYS if before[k] == old]
        assert sum(after[k] == "5" for k in theirs) / len(theirs) == pytest.approx(0.10, abs=0.03)


def test_idle_version_gets_no_key() -> None:
    assignment = route(Router({"3": 90, "4": 10, "6": 0}))
    assert "6" not in set(assignment.values())
    # and being listed at weight 0 does not change anyone's route
    assert assignment == route(Router({"3": 90, "4": 10}))


def test_single_live_version_takes_everything() -> None:
    router = Router({"3": 100, "4": 0})
    assert {router.choose(k) for k in KEYS[:1000]} == {"3"}
    assert {router.choose(None) for _ in range(1000)} == {"3"}


def test_empty_key_is_a_key() -> None:
    router = Router({"3": 50, "4": 50})
    assert len({router.choose("") for _ in range(50)}) == 1


# -- keyless requests ----------------------------------------------------------------------------

def test_keyless_requests_are_random_by_weight_and_skip_idle_versions() -> None:
    router = Router({"3": 90, "4": 10, "6": 0})
    counts = Counter(router.choose(None) for _ in range(20_000))
    assert counts["6"] == 0
    assert set(counts) == {"3", "4"}
    assert counts["4"] / 20_000 == pytest.approx(0.10, abs=0.015)


def test_keyless_requests_are_not_sticky() -> None:
    router = Router({"3": 50, "4": 50})
    assert set(router.choose(None) for _ in range(200)) == {"3", "4"}


# -- shadow --------------------------------------------------------------------------------------

def test_full_shadow_mirrors_every_request() -> None:
    router = Router({"3": 90, "4": 10}, shadow="5")
    assert {router.shadow_for(k) for k in KEYS} == {"5"}
    assert {router.shadow_for(None) for _ in range(1000)} == {"5"}


def test_partial_shadow_mirrors_its_fraction_deterministically() -> None:
    router = Router({"3": 90, "4": 10}, shadow="5", shadow_fraction=0.25)
    mirrored = {k for k in KEYS if router.shadow_for(k) == "5"}
    assert {router.shadow_for(k) for k in KEYS} == {"5", None}
    assert len(mirrored) / N == pytest.approx(0.25, abs=0.02)
    again = Router({"3": 90, "4": 10}, shadow="5", shadow_fraction=0.25)
    assert {k for k in KEYS if again.shadow_for(k) == "5"} == mirrored
    assert all((router.shadow_for(k) == "5") == (k in mirrored) for k in KEYS[:500])
    # the sample does not lean on either live version
    assignment = route(router)
    for version in ("3", "4"):
        theirs = [k for k in KEYS if assignment[k] == version]
        assert sum(k in mirrored for k in theirs) / len(theirs) == pytest.approx(0.25, abs=0.05)


def test_partial_shadow_without_key_is_random() -> None:
    router = Router({"3": 100}, shadow="5", shadow_fraction=0.25)
    hits = sum(router.shadow_for(None) == "5" for _ in range(20_000))
    assert hits / 20_000 == pytest.approx(0.25, abs=0.02)


def test_no_shadow_means_no_mirror() -> None:
    router = Router({"3": 90, "4": 10})
    assert router.shadow_for("customer-1") is None
    assert router.shadow_for(None) is None


def test_shadow_without_weight_never_serves() -> None:
    router = Router({"3": 90, "4": 10}, shadow="5")
    assert "5" not in {router.choose(k) for k in KEYS}
    assert "5" not in {router.choose(None) for _ in range(5000)}


def test_shadow_may_also_be_a_weighted_version() -> None:
    router = Router({"3": 90, "4": 10}, shadow="4", shadow_fraction=0.5)
    assert router.versions == ("3", "4")
    assert share(route(router), "4") == pytest.approx(0.10, abs=0.015)


# -- the table -----------------------------------------------------------------------------------

def test_weights_and_versions() -> None:
    router = Router({"3": 90, "4": 10, "6": 0}, shadow="5", shadow_fraction=0.5)
    assert router.weights == {"3": 90, "4": 10, "6": 0}
    assert set(router.versions) == {"3", "4", "6", "5"}
    copy = router.weights
    copy["3"] = 0
    assert router.weights["3"] == 90
    assert route(router) == route(Router({"3": 90, "4": 10}))


@pytest.mark.parametrize(("weights", "field", "value"), [
    ({"3": 90, "4": 9}, "sum", "99"),
    ({"3": 110, "4": -10}, "weights['3']", "110"),
    ({"3": 101}, "weights['3']", "101"),
    ({"3": 100, "4": 0, "5": -1}, "weights['5']", "-1"),
    ({"3": 0, "4": 0}, "positive", "{'3': 0, '4': 0}"),
    ({}, "positive", "{}"),
    ({"3": 90.0, "4": 10}, "weights['3']", "90.0"),
    ({"3": "90", "4": 10}, "weights['3']", "'90'"),
    ({"3": True, "4": 99}, "weights['3']", "True"),
    ({"": 100}, "version", "''"),
    ({3: 100}, "version", "3"),
])
def test_invalid_weights_are_rejected(weights: dict, field: str, value: str) -> None:
    with pytest.raises(ValueError) as err:
        Router(weights)
    assert "weights" in str(err.value)
    assert field in str(err.value)
    assert value in str(err.value)


@pytest.mark.parametrize("fraction", [0, 0.0, 1.5, -0.1, float("nan"), "0.5"])
def test_invalid_shadow_fraction_is_rejected(fraction: object) -> None:
    with pytest.raises(ValueError) as err:
        Router({"3": 100}, shadow="4", shadow_fraction=fraction)  # type: ignore[arg-type]
    assert "shadow_fraction" in str(err.value)
    assert repr(fraction) in str(err.value)


@pytest.mark.parametrize("shadow", ["", 4])
def test_invalid_shadow_is_rejected(shadow: object) -> None:
    with pytest.raises(ValueError) as err:
        Router({"3": 100}, shadow=shadow)  # type: ignore[arg-type]
    assert "shadow" in str(err.value)
    assert repr(shadow) in str(err.value)
