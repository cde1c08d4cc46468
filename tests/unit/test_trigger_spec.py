"""The spec's `triggers` and `monitoring` sections: what is accepted, and bad input refused with
exit 2 naming the field (issue 14's Bad-input lines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlplatform.cli.app import app
from mlplatform.spec_loader import SpecError, load_spec

MINIMAL = "name: p\nsource: {path: d, entity_column: id, timestamp_column: ts}\n"


def _load(tmp_path: Path, text: str):  # noqa: ANN202
    f = tmp_path / "p.yaml"
    f.write_text(MINIMAL + text)
    return load_spec(f, env={})


def test_a_full_triggers_section_loads_with_its_defaults(tmp_path: Path) -> None:
    spec = _load(tmp_path, "triggers:\n  min_interval: 10m\n  new_data: true\n"
                           "  schedule: {cron: '0 3 * * *'}\n  drift: {on: [batch, live]}\n"
                           "  quality: {metric: roc_auc, min_value: 0.75}\n"
                           "monitoring: {window: 2h}\n")
    t = spec.triggers
    assert t is not None and t.new_data is not None and t.new_data.poll == "30s"
    assert t.schedule is not None and t.schedule.cron == "0 3 * * *"
    assert t.drift is not None and t.drift.on == ["batch", "live"] and t.drift.threshold is None
    assert t.quality is not None and not t.quality.estimated
    assert (spec.monitoring.window, spec.monitoring.interval, spec.monitoring.min_rows) == ("2h", "10m", 100)
    assert _load(tmp_path, "triggers: {new_data: false}\n").triggers.new_data is None  # type: ignore[union-attr]
    assert _load(tmp_path, "").triggers is None


def test_a_regression_quality_trigger_takes_an_upper_bound(tmp_path: Path) -> None:
    spec = _load(tmp_path, "model: {task: regression, estimator: sklearn.linear_model.Ridge, metric: mae}\n"
                           "triggers:\n  quality: {metric: mae, max_value: 3.5}\n")
    assert spec.triggers is not None and spec.triggers.quality is not None
    assert spec.triggers.quality.max_value == 3.5


@pytest.mark.parametrize(("section", "path", "words"), [
    ("triggers: {schedule: {cron: '0 3 * *'}}", "triggers.schedule.cron", "'0 3 * *' is not a five-field"),
    ("triggers: {schedule: {cron: '61 3 * * *'}}", "triggers.schedule.cron", "'61 3 * * *'"),
    ("triggers: {schedule: {cron: '0 0 3 * * * *'}}", "triggers.schedule.cron", "five-field"),
    ("triggers: {drift: {threshold: 1.5}}", "triggers.drift.threshold", "less than or equal to 1"),
    ("triggers: {drift: {threshold: 0}}", "triggers.drift.threshold", "greater than 0"),
    ("triggers: {drift: {on: [weekly]}}", "triggers.drift.on[0]", "'batch' or 'live'"),
    ("triggers: {quality: {metric: rmse, max_value: 2}}", "triggers",
     "triggers.quality.metric 'rmse' is not a classification metric"),
    ("triggers: {quality: {metric: roc_auc, min_value: 1.2}}", "triggers",
     "triggers.quality.min_value 1.2 is outside the range of 'roc_auc'"),
    ("model: {metric: log_loss}\ntriggers: {quality: {metric: log_loss, min_value: 0.3}}", "triggers",
     "triggers.quality.max_value is required for 'log_loss'"),
    ("triggers: {quality: {metric: accuracy, min_value: 0.8}}", "triggers",
     "live quality is measured on model.metric 'roc_auc'"),
    ("triggers: {min_interval: soon}", "triggers.min_interval", "'soon'"),
    ("monitoring: {min_rows: 0}", "monitoring.min_rows", "greater than or equal to 1"),
    ("triggers: {cron: '0 3 * * *'}", "triggers.cron", "unknown key"),
    ("triggers: {schedule: {cron: '0 0 31 2 *'}}", "triggers.schedule.cron", "never happens"),
    ("validation: {drift: {enabled: false}}\ntriggers: {drift: {on: [live]}}", "triggers",
     "validation.drift.enabled is false"),
    ("validation: {drift: {trigger_retraining: false}}\ntriggers: {drift: {on: [batch]}}", "triggers",
     "trigger_retraining is false"),
])
def test_bad_triggers_exit_2_naming_the_field(tmp_path: Path, section: str, path: str, words: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(MINIMAL + section + "\n")
    with pytest.raises(SpecError) as info:
        load_spec(f, env={})
    issues = [(i.path, i.message) for i in info.value.issues]
    assert any(p == path and words in m for p, m in issues), issues
    result = CliRunner().invoke(app, ["spec", "check", str(f), "--json"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert path in [e["path"] for e in json.loads(result.stdout)["errors"]]


def test_estimated_quality_is_for_classifiers_only(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="estimate"):
        _load(tmp_path, "model: {task: regression, estimator: sklearn.linear_model.Ridge, metric: r2}\n"
                        "triggers:\n  quality: {metric: r2, min_value: 0.5, estimated: true}\n")
