"""The closed loop's HTML report: the per-bucket series it plots are the numbers put in the
log (counts, errors, latency percentiles, outcomes; only the rollout's live traffic in its
window), and the HTML carries every day, every rollout's figure (decodable PNGs, one per
rollout, with the panels its data allows) and the decisions with their reasons, escaped.

The sample data here is reused by tests/e2e/test_report_browser.py."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
import struct
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlplatform.rollout.report import DayRow, LoopReport, build, panels, render_html, series, write
from mlplatform.rollout.state import Event, GuardrailCheck, RolloutState
from mlplatform.rollout.state import TestResult as ABTest

T0 = dt.datetime(2026, 3, 2, 12, 0, 0)
PIPE, SVC = "churn", "churn_svc"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _s(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _test(lift: float, low: float, high: float, verdict: str) -> ABTest:
    return ABTest(metric="accuracy", method="two_proportion_z", n_champion=40, n_challenger=30,
                      mean_champion=0.6, mean_challenger=0.6 + lift, lift=lift, ci_low=low, ci_high=high,
                      p_value=0.03, verdict=verdict)  # type: ignore[arg-type]


def _passed(name: str = "success_rate") -> GuardrailCheck:
    return GuardrailCheck(name=name, status="passed", challenger=1.0, champion=1.0, threshold=0.99,
                          detail="ok")  # type: ignore[arg-type]


def promoted() -> RolloutState:
    """A canary 10 -> 50 -> 100 with an A/B test at each look, promoted at +8 s."""
    return RolloutState(
        id="ro-1", pipeline=PIPE, model_name="churn", champion="1", challenger="2", strategy="canary",
        status="promoted", phase="done", weight=100, step_started_at=_s(8), started_at=T0,
        updated_at=_s(10), reason="challenger better: lift 0.12 [0.02, 0.22]",
        timeline=[Event(at=T0, action="start", phase="canary", weight=10, by="demo"),
                  Event(at=_s(4), action="advance", phase="canary", weight=50, checks=[_passed()],
                        test=_test(0.05, -0.10, 0.20, "continue"), reasons=["guardrails passed"]),
                  Event(at=_s(8), action="promote", phase="done", weight=100,
                        checks=[_passed(), _passed("latency")], test=_test(0.12, 0.02, 0.22, "challenger"),
                        reasons=["challenger better"])])


def rolled_back() -> RolloutState:
    """A canary whose challenger fails half its requests: rolled back at the first check."""
    failed = GuardrailCheck(name="success_rate", status="failed", challenger=0.52, champion=1.0,
                            threshold=0.99, detail="success rate 0.52 < 0.99")
    return RolloutState(
        id="ro-2", pipeline=PIPE, model_name="churn", champion="2", challenger="3", strategy="canary",
        status="rolled_back", phase="canary", weight=0, step_started_at=_s(100), started_at=_s(100),
        updated_at=_s(106), reason="success rate 0.52 < 0.99 <b>not bold</b>",
        timeline=[Event(at=_s(100), action="start", phase="canary", weight=10, by="demo"),
                  Event(at=_s(103), action="wait", phase="canary", weight=10,
                        checks=[failed.model_copy(update={"status": "waiting"})]),
                  Event(at=_s(105), action="rollback", phase="canary", weight=0, checks=[failed],
                        reasons=["success rate 0.52 < 0.99"])])


def silent() -> RolloutState:
    """A shadow rollout aborted before any traffic reached it: no series, no tests."""
    return RolloutState(
        id="ro-3", pipeline=PIPE, model_name="churn", champion="2", challenger="4", strategy="shadow",
        status="aborted", phase="shadow", weight=0, step_started_at=_s(200), started_at=_s(200),
        updated_at=_s(201), reason="aborted by operator",
        timeline=[Event(at=_s(200), action="start", phase="shadow", weight=0, by="demo"),
                  Event(at=_s(201), action="abort", phase="shadow", weight=0, by="operator")])


def _row(rid: str, at: float, version: str, variant: str, latency: float, *, error: str | None = None,
         output: str = "1", label: str | None = None) -> dict[str, Any]:
    return {"request_id": rid, "event_ts": _s(at), "pipeline": PIPE, "version": version, "variant": variant,
            "entity": f"e-{rid}", "output": None if error else output, "score": None if error else 1.0,
            "latency_ms": latency, "error": error,
            "label": label, "label_value": None if label is None else float(label),
            "feedback_ts": None if label is None else _s(at + 30)}


def sample_log() -> pd.DataFrame:
    """Known traffic for ro-1 (2-s buckets from T0) and ro-2 (from +100 s), plus rows neither
    may count: outside the window, pinned, validation, another version's shadow."""
    rows = [
        # ro-1 bucket 0 [0, 2): champion 5 rows (1 error), latencies 10..50
        *[_row(f"a{i}", 0.2 * i, "1", "champion", 10.0 * (i + 1), label="1") for i in range(4)],
        _row("a4", 1.9, "1", "champion", 50.0, error="ValueError: boom"),
        # challenger 2 rows, both labelled, one right
        _row("b0", 0.5, "2", "challenger", 5.0, output="1", label="1"),
        _row("b1", 1.5, "2", "challenger", 7.0, output="0", label="1"),
        # bucket 1 [2, 4): champion 3, challenger 3, no errors, no labels
        *[_row(f"c{i}", 2.0 + 0.5 * i, "1", "champion", 20.0) for i in range(3)],
        *[_row(f"d{i}", 2.1 + 0.5 * i, "2", "challenger", 8.0) for i in range(3)],
        # bucket 3 [6, 8): champion 1, challenger 4 (2 errors); the last exactly at updated_at
        _row("e0", 6.5, "1", "champion", 30.0),
        *[_row(f"f{i}", 6.0 + 0.4 * i, "2", "challenger", 100.0 * (i + 1)) for i in range(2)],
        *[_row(f"g{i}", 7.0 + 0.5 * i, "2", "challenger", 1.0, error="RuntimeError") for i in range(2)],
        _row("h0", 10.0, "2", "challenger", 9.0),  # bucket 5, at updated_at: counted
        # not ro-1's live traffic
        _row("x0", -0.5, "1", "champion", 1.0),  # before start
        _row("x1", 10.5, "1", "champion", 1.0),  # after updated_at
        _row("x2", 1.0, "1", "pinned", 1.0),
        _row("x3", 1.0, "2", "validation", 1.0),
        _row("x4", 1.0, "9", "shadow", 1.0),
        _row("x5", 1.0, "2", "champion", 1.0),  # the challenger's version as champion: not ro-1's
        # ro-2 [100, 102): champion 1, challenger 4 of which 2 errors; [102, 104): champion 1
        *[_row(f"r{i}", 100.5 + 2 * i, "2", "champion", 12.0) for i in range(2)],
        *[_row(f"s{i}", 100.2 + 0.3 * i, "3", "challenger", 15.0, error="KeyError" if i % 2 else None)
          for i in range(4)],
    ]
    return pd.DataFrame(rows).sort_values("event_ts", kind="stable").reset_index(drop=True)


def sample_days() -> list[DayRow]:
    return [
        DayRow(day=1, date="2026-03-01", kind="first", run_id="run-1", run_status="succeeded",
               model_version="1", gate="passed", outcome="first model v1 deployed", champion_after="1"),
        DayRow(day=2, date="2026-03-02", kind="normal", run_id="run-2", run_status="succeeded",
               model_version="2", gate="passed", rollout_id="ro-1", outcome="canary promoted v2",
               champion_after="2"),
        DayRow(day=3, date="2026-03-03", kind="bad model", run_id="run-3", run_status="succeeded",
               model_version="3", gate="passed", rollout_id="ro-2",
               outcome="rolled back v3: success rate 0.52 < 0.99", champion_after="2"),
        DayRow(day=4, date="2026-03-04", kind="noisy labels", run_id="run-4", run_status="succeeded",
               model_version="4", gate="passed", rollout_id="ro-3",
               outcome="shadow aborted; v2 keeps serving",
               champion_after="2"),
        DayRow(day=5, date="2026-03-05", kind="drift", run_id="run-5", run_status="succeeded",
               model_version="5", gate="rejected", outcome="gate rejected v5 & v2 keeps serving",
               champion_after="2"),
        DayRow(day=6, date="2026-03-06", kind="schema break", run_id="run-6", run_status="failed",
               outcome="stopped at validation; v2 keeps serving", champion_after="2"),
    ]


def sample_report() -> LoopReport:
    log = sample_log()
    states = [promoted(), rolled_back(), silent()]
    return LoopReport(pipeline=PIPE, generated_at=_s(300), days=sample_days(), rollouts=states,
                      series={s.id: series(log, s, "accuracy") for s in states}, metric="accuracy")


def _key(points: list[Any]) -> dict[tuple[float, str], Any]:
    return {((p.at - T0).total_seconds(), p.version): p for p in points}


def test_series_counts_the_rollouts_live_traffic_per_bucket() -> None:
    got = _key(series(sample_log(), promoted(), "accuracy"))
    assert sorted(got) == [(0.0, "1"), (0.0, "2"), (2.0, "1"), (2.0, "2"), (6.0, "1"), (6.0, "2"),
                           (10.0, "2")]
    counts = {k: (p.requests, p.errors) for k, p in got.items()}
    assert counts == {(0.0, "1"): (4, 1), (0.0, "2"): (2, 0), (2.0, "1"): (3, 0), (2.0, "2"): (3, 0),
                      (6.0, "1"): (1, 0), (6.0, "2"): (2, 2), (10.0, "2"): (1, 0)}
    first = got[(0.0, "1")]
    assert first.variant == "champion" and first.p50_ms == 30.0 and first.p99_ms == pytest.approx(49.6)
    assert got[(6.0, "2")].p99_ms == pytest.approx(197.0)  # [1, 1, 100, 200]: errors have latency too
    # outcomes: labelled answers only (the error row a4 has a label but no answer)
    assert (first.outcomes, first.outcome_mean) == (4, 1.0)
    assert (got[(0.0, "2")].outcomes, got[(0.0, "2")].outcome_mean) == (2, 0.5)
    assert (got[(2.0, "1")].outcomes, got[(2.0, "1")].outcome_mean) == (0, None)
    assert got[(0.0, "2")].variant == "challenger"


def test_series_of_the_rolled_back_rollout_and_tz_aware_logs() -> None:
    log = sample_log()
    got = _key(series(log, rolled_back(), None))
    assert {k: (p.requests, p.errors) for k, p in got.items()} == {
        (100.0, "2"): (1, 0), (100.0, "3"): (2, 2), (102.0, "2"): (1, 0)}
    assert all(p.outcomes == 0 and p.outcome_mean is None for p in got.values())  # no metric
    aware = log.assign(event_ts=pd.to_datetime(log["event_ts"]).dt.tz_localize("UTC"))
    assert series(aware, rolled_back(), None) == series(log, rolled_back(), None)
    assert series(log.iloc[0:0], promoted(), "accuracy") == []
    assert series(log, silent(), "accuracy") == []


def test_series_bucket_width() -> None:
    got = _key(series(sample_log(), promoted(), "accuracy", bucket_s=5.0))
    assert {k: p.requests + p.errors for k, p in got.items()} == {
        (0.0, "1"): 8, (0.0, "2"): 5, (5.0, "1"): 1, (5.0, "2"): 4, (10.0, "2"): 1}


def _images(page: str) -> list[tuple[str, bytes]]:
    return [(alt, base64.b64decode(data)) for data, alt in
            re.findall(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)' alt='([^']*)'>", page)]


def _pixels_like(png: bytes, rgb: tuple[int, int, int]) -> int:
    """How many of the image's pixels have this colour (within a few levels): a plot's line."""
    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3] * 255
    return int((abs(pixels - rgb).max(axis=-1) <= 10).sum())


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_MAGIC and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def test_html_has_every_day_every_figure_and_the_decisions() -> None:
    report = sample_report()
    page = render_html(report)
    for day in report.days:
        assert f"<td>{__import__('html').escape(day.outcome)}</td>" in page
    assert "rolled back v3: success rate 0.52 &lt; 0.99" in page and "0.52 < 0.99" not in page
    assert "gate rejected v5 &amp; v2 keeps serving" in page
    assert "<b>not bold</b>" not in page and "&lt;b&gt;not bold&lt;/b&gt;" in page  # the reason, escaped
    images = _images(page)
    assert len(images) == len(report.rollouts) == page.count("<img") == page.count("<figcaption>")
    sizes = []
    for alt, png in images:
        assert len(png) > 5000, alt  # a real plot, not an empty canvas
        sizes.append(_png_size(png))
    alts = [alt for alt, _ in images]
    assert "weight, error rate, latency, outcome, lift" in alts[0]
    assert "weight, error rate, latency over time" in alts[1] and "lift" not in alts[1]
    assert "weight, error rate, latency over time" in alts[2]
    assert sizes[0][1] > sizes[1][1] * 1.4  # five stacked panels against three
    lift_purple = (0x6A, 0x1B, 0x9A)  # the lift line and its look markers
    assert _pixels_like(images[0][1], lift_purple) > 100 and _pixels_like(images[1][1], lift_purple) == 0
    # decisions, reasons and guardrail details
    assert "Decision: <b>promoted</b>" in page and "Decision: <b>rolled_back</b>" in page
    assert "<span class='failed'>success_rate failed</span>: challenger 0.52" in page
    assert "lift 0.12 [0.02, 0.22]" in page and "<b>challenger</b>" in page
    assert len(page) < 1_000_000
    # the versions section: v5 never rolled out, v3's rollout rolled back
    versions = page.split("<h2>Model versions and gate decisions</h2>")[1]
    assert "<td>5</td>" in versions and "not rolled out" in versions and "ro-2: rolled_back" in versions
    tones = re.findall(r"<tr class='t-([a-z-]*)'><td>\d+</td><td>2026", page)
    assert tones == ["", "promoted", "rolled-back", "stopped", "rejected", "stopped"]


def test_panels_follow_the_data() -> None:
    report = sample_report()
    assert panels(promoted(), report.series["ro-1"]) == ["weight", "error rate", "latency", "outcome", "lift"]
    assert panels(promoted(), []) == ["weight", "error rate", "latency", "lift"]
    assert panels(rolled_back(), report.series["ro-2"]) == ["weight", "error rate", "latency"]


def test_a_rollout_without_traffic_or_tests_and_an_empty_report_render() -> None:
    bare = silent().model_copy(update={"timeline": []})
    report = LoopReport(pipeline=PIPE, generated_at=T0, days=[], rollouts=[bare, silent()],
                        series={}, metric=None)
    page = render_html(report)
    assert len(_images(page)) == 2 and all(png[:8] == PNG_MAGIC for _, png in _images(page))
    empty = render_html(LoopReport(pipeline=PIPE, generated_at=T0, days=[], rollouts=[], series={}))
    assert "no rollouts" in empty and "no model trained" in empty and "<img" not in empty


def test_build_reads_the_log_and_write_is_atomic(tmp_path: Path) -> None:
    from serve.predlog import BatchedLog, feedback_writer, prediction_writer

    storage = f"file://{tmp_path / 'store'}"
    log = sample_log()
    preds = BatchedLog(prediction_writer(storage, PIPE, SVC), max_delay_s=60)
    preds.append([{k: v for k, v in r.items() if k not in ("label", "label_value", "feedback_ts", "score")
                   and not (k == "error" and pd.isna(v))} for r in log.to_dict("records")])
    preds.close()
    fb = BatchedLog(feedback_writer(storage, PIPE), max_delay_s=60)
    fb.append([{"request_id": r["request_id"], "label": r["label"], "event_ts": r["feedback_ts"]}
               for r in log.to_dict("records") if pd.notna(r["label"])])
    fb.close()
    states = [promoted(), rolled_back(), silent()]
    report = build(storage, SVC, PIPE, sample_days(), states, "accuracy")
    for state in states:
        assert [p.model_dump(exclude={"at"}) for p in report.series[state.id]] == [
            p.model_dump(exclude={"at"}) for p in series(log, state, "accuracy")], state.id
    assert LoopReport.model_validate_json(report.model_dump_json()) == report
    # metric None: each rollout's plan metric (none here: no outcomes)
    assert all(p.outcomes == 0 for p in build(storage, SVC, PIPE, [], states, None).series["ro-1"])

    target = tmp_path / "out" / "loop.html"
    assert write(report, target) == target
    assert target.read_text(encoding="utf-8") == render_html(report)
    assert [p.name for p in target.parent.iterdir()] == ["loop.html"]
