"""The `deploy.rollout` section as a user writes it: a bad plan is refused when the spec is
loaded (`load_spec`, what `submit` does) and by `platformctl spec check` (exit 2, no
traceback), with a message that names the field and the value; the demo's plan parses with
the values it states."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplatform.spec_loader import SpecError, load_spec
from tests.conftest import ROOT, cli, platformctl

CLASSIFIER = ("classification", "sklearn.ensemble.HistGradientBoostingClassifier", "roc_auc")
REGRESSOR = ("regression", "sklearn.ensemble.HistGradientBoostingRegressor", "rmse")

SPEC = """\
name: p
source: {{path: d, entity_column: id, timestamp_column: ts, label_column: y}}
model:
  task: {task}
  estimator: {estimator}
  metric: {metric}
deploy:
  rollout:
{rollout}"""
ROLLOUT_LINE = 8  # the line of `rollout:` above


def _write(tmp_path: Path, rollout: str, model: tuple[str, str, str] = CLASSIFIER) -> Path:
    task, estimator, metric = model
    f = tmp_path / "p.yaml"
    body = "".join(f"    {line}\n" for line in rollout.strip("\n").splitlines())
    f.write_text(SPEC.format(task=task, estimator=estimator, metric=metric, rollout=body))
    return f


# (id, rollout section, model, what the message must name: the field, then the value)
BAD = [
    ("steps-repeat", "strategy: canary\nsteps: [5, 5, 50]", CLASSIFIER,
     ["rollout.steps", "increase", "[5, 5, 50]"]),
    ("steps-decrease", "strategy: canary\nsteps: [50, 25]", CLASSIFIER,
     ["rollout.steps", "increase", "[50, 25]"]),
    ("step-over-100", "strategy: canary\nsteps: [5, 150]", CLASSIFIER,
     ["rollout.steps", "between 1 and 100", "[150]"]),
    ("step-under-1", "strategy: canary\nsteps: [0, 50]", CLASSIFIER,
     ["rollout.steps", "between 1 and 100", "got [0]"]),
    ("shadow-step-over-100", "strategy: shadow\nsteps: [10, 101]", CLASSIFIER,
     ["rollout.steps", "[101]"]),
    ("steps-100-alone", "strategy: canary\nsteps: [100]", CLASSIFIER,
     ["rollout.steps", "[100]", "strategy: direct"]),
    ("steps-empty", "strategy: canary\nsteps: []", CLASSIFIER,
     ["rollout.steps", "at least one step"]),
    ("interval-0s", "strategy: canary\ninterval: 0s", CLASSIFIER,
     ["rollout.interval", "'0s'"]),
    ("interval-not-a-duration", "strategy: canary\ninterval: soon", CLASSIFIER,
     ["deploy.rollout.interval", "'soon'"]),
    ("success-rate-min-requests-0", "strategy: canary\nguardrails:\n  success_rate: {min_requests: 0}",
     CLASSIFIER, ["deploy.rollout.guardrails.success_rate.min_requests", "got 0"]),
    ("latency-min-requests-0", "strategy: canary\nguardrails:\n  latency: {min_requests: 0}",
     CLASSIFIER, ["deploy.rollout.guardrails.latency.min_requests", "got 0"]),
    ("shift-min-requests-9", "strategy: canary\nguardrails:\n  prediction_shift: {min_requests: 9}",
     CLASSIFIER, ["deploy.rollout.guardrails.prediction_shift.min_requests", "got 9"]),
    ("quality-min-outcomes-0", "strategy: canary\nguardrails:\n  quality: {min_outcomes: 0}",
     CLASSIFIER, ["deploy.rollout.guardrails.quality.min_outcomes", "got 0"]),
    ("ab-without-ab-test", "strategy: ab", CLASSIFIER,
     ["rollout.strategy 'ab'", "rollout.ab_test"]),
    ("group-sequential-without-max", "strategy: ab\nab_test: {method: group_sequential}", CLASSIFIER,
     ["ab_test.method 'group_sequential'", "ab_test.max_samples"]),
    ("fixed-without-max", "strategy: ab\nab_test: {method: fixed}", CLASSIFIER,
     ["ab_test.method 'fixed'", "ab_test.max_samples"]),
    ("max-below-min", "strategy: ab\nab_test: {min_samples: 200, max_samples: 100}", CLASSIFIER,
     ["ab_test.max_samples (100)", "ab_test.min_samples (200)"]),
    ("accuracy-on-regression", "strategy: ab\nab_test: {metric: accuracy}", REGRESSOR,
     ["rollout.ab_test.metric 'accuracy'", "classification", "regression"]),
    ("brier-on-regression", "strategy: canary\nab_test: {metric: brier}", REGRESSOR,
     ["rollout.ab_test.metric 'brier'", "classification", "regression"]),
    ("abs-error-on-classifier", "strategy: ab\nab_test: {metric: abs_error}", CLASSIFIER,
     ["rollout.ab_test.metric 'abs_error'", "regression", "classification"]),
    ("quality-abs-error-on-classifier",
     "strategy: canary\nguardrails:\n  quality: {metric: abs_error}", CLASSIFIER,
     ["rollout.guardrails.quality.metric 'abs_error'", "classification"]),
    ("quality-metric-differs", "strategy: ab\nab_test: {metric: accuracy}\nguardrails:\n"
     "  quality: {metric: brier}", CLASSIFIER,
     ["rollout.guardrails.quality.metric 'brier'", "rollout.ab_test.metric 'accuracy'"]),
    ("unknown-key-typo", "strategy: canary\nstep: [5, 50]", CLASSIFIER,
     ["deploy.rollout.step", "unknown key"]),
    ("unknown-strategy", "strategy: blue_green", CLASSIFIER,
     ["deploy.rollout.strategy", "'blue_green'"]),
    ("on-failure-explode", "strategy: canary\non_failure: explode", CLASSIFIER,
     ["deploy.rollout.on_failure", "'explode'", "'rollback' or 'pause'"]),
]
IDS = [case[0] for case in BAD]


def _flat(text: str) -> str:
    """Rich wraps long lines; what a person reads is the words."""
    return " ".join(text.split())


@pytest.mark.parametrize(("case", "rollout", "model", "needles"), BAD, ids=IDS)
def test_load_spec_refuses_a_bad_plan_naming_field_and_value(
        tmp_path: Path, case: str, rollout: str, model: tuple[str, str, str], needles: list[str]) -> None:
    f = _write(tmp_path, rollout, model)
    with pytest.raises(SpecError) as info:
        load_spec(f, env={})
    assert len(info.value.issues) == 1, info.value.issues
    text = _flat(str(info.value))
    assert str(f) in text  # the user's file, as they named it
    for needle in needles:
        assert needle in text, (needle, text)


@pytest.mark.parametrize(("case", "rollout", "model", "needles"), BAD, ids=IDS)
def test_spec_check_exits_2_naming_field_and_value(
        tmp_path: Path, case: str, rollout: str, model: tuple[str, str, str], needles: list[str]) -> None:
    f = _write(tmp_path, rollout, model)
    result = cli("spec", "check", str(f))
    assert result.returncode == 2, (result.stdout, result.stderr)
    text = _flat(result.stderr)
    assert "1 problem(s)" in text, text
    for needle in needles:
        assert needle in text, (needle, text)
    assert "Traceback" not in result.stdout + result.stderr
    assert "internal error" not in text


def test_errors_inside_the_rollout_section_point_at_their_line(tmp_path: Path) -> None:
    """A key-level error carries its YAML path and line; a plan-level one (steps against
    strategy) points at the rollout section."""
    f = _write(tmp_path, "strategy: canary\nfailure_limit: 2\non_failure: explode")
    with pytest.raises(SpecError) as info:
        load_spec(f, env={})
    [issue] = info.value.issues
    assert (issue.path, issue.line, issue.value) == ("deploy.rollout.on_failure", ROLLOUT_LINE + 3,
                                                     "explode")
    f = _write(tmp_path, "strategy: canary\nsteps: [50, 25]")
    with pytest.raises(SpecError) as info:
        load_spec(f, env={})
    [issue] = info.value.issues
    assert (issue.path, issue.line) == ("deploy.rollout", ROLLOUT_LINE)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Two independent mistakes in the section: both named, not one per attempt."""
    f = _write(tmp_path, "strategy: canary\non_failure: explode\nguardrails:\n"
               "  latency: {min_requests: 0}")
    with pytest.raises(SpecError) as info:
        load_spec(f, env={})
    assert {i.path for i in info.value.issues} == {"deploy.rollout.on_failure",
                                                    "deploy.rollout.guardrails.latency.min_requests"}


def test_the_real_console_script_refuses_a_bad_plan_without_a_traceback(tmp_path: Path) -> None:
    f = _write(tmp_path, "strategy: canary\nsteps: [50, 25]")
    result = platformctl("spec", "check", str(f), timeout=120)
    assert result.returncode == 2, (result.stdout, result.stderr)
    text = _flat(result.stderr)
    assert "rollout.steps must increase, got [50, 25]" in text, text
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(("rollout", "model"), [
    ("strategy: canary\nsteps: [5, 25, 50, 100]", CLASSIFIER),
    ("strategy: shadow\nsteps: [10]\nshadow_checks: 3", CLASSIFIER),
    ("strategy: ab\nsplit: 10\nab_test: {metric: abs_error, method: group_sequential, max_samples: 400}",
     REGRESSOR),
    ("strategy: ab\nab_test: {metric: label_mean}\nguardrails:\n  quality: {metric: label_mean}", REGRESSOR),
    ("strategy: canary\nab_test: {metric: accuracy}\nguardrails:\n  quality: {metric: accuracy}\n"
     "  latency: null", CLASSIFIER),
    ("strategy: direct", CLASSIFIER),
], ids=["canary-final-100", "shadow", "ab-regression", "label-mean", "canary-ab-quality", "direct"])
def test_good_plans_are_accepted(tmp_path: Path, rollout: str, model: tuple[str, str, str]) -> None:
    f = _write(tmp_path, rollout, model)
    assert load_spec(f, env={}).deploy is not None
    result = cli("spec", "check", str(f))
    assert result.returncode == 0, (result.stdout, result.stderr)


def test_a_final_100_is_the_promotion_not_a_step(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, "strategy: canary\nsteps: [5, 25, 50, 100]"), env={})
    assert spec.deploy is not None
    assert spec.deploy.rollout.canary_steps == [5, 25, 50]


def test_without_a_rollout_section_the_deploy_is_direct(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("name: p\nsource: {path: d, entity_column: id, timestamp_column: ts}\ndeploy: {}\n")
    spec = load_spec(f, env={})
    assert spec.deploy is not None
    assert spec.deploy.rollout.strategy == "direct" and not spec.deploy.rollout.progressive


def test_the_demo_rollout_parses_with_the_values_it_states() -> None:
    spec = load_spec(ROOT / "jobs" / "examples" / "demo.yaml", env={"PLATFORM_HOME": "/h"})
    assert spec.deploy is not None
    r = spec.deploy.rollout
    assert (r.strategy, r.steps, r.canary_steps) == ("canary", [10, 50], [10, 50])
    assert (r.interval, r.interval_s) == ("20s", 20)
    assert (r.step_timeout, r.step_timeout_s) == ("5m", 300)
    assert (r.failure_limit, r.on_failure) == (2, "rollback")
    g = r.guardrails
    assert g.success_rate is not None and g.latency is not None and g.prediction_shift is not None
    assert (g.success_rate.min, g.success_rate.max_drop, g.success_rate.min_requests) == (0.99, 0.01, 20)
    assert (g.latency.max_ratio, g.latency.slack_ms, g.latency.min_requests) == (2.0, 20, 20)
    assert (g.prediction_shift.max_psi, g.prediction_shift.min_requests) == (0.5, 50)
    assert g.quality is None  # not stated: off
    ab = r.ab_test
    assert ab is not None
    assert (ab.metric, ab.method, ab.alpha, ab.min_samples, ab.min_effect, ab.max_samples) == (
        "brier", "sequential", 0.05, 200, 0.005, None)
    assert ab.decide_before_promotion is True and r.max_duration == "5m"
    # Defaults it does not state.
    assert (r.split, r.shadow_checks) == (50, 1)
