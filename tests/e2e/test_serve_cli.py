"""`platformctl serve` and `predict` refuse bad input before they touch a cluster: exit 2 with
a message naming the value, no traceback."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import cli

SPEC = "name: p\nsource: {path: d, entity_column: id, timestamp_column: ts}\n"


def _ok_error(result, needle: str, code: int = 2) -> None:  # noqa: ANN001
    assert result.returncode == code, (result.stdout, result.stderr)
    text = " ".join(result.stderr.split())
    assert needle in text, text
    assert "Traceback" not in result.stderr + result.stdout


def test_serve_deploy_needs_a_deploy_section(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(SPEC)
    _ok_error(cli("serve", "deploy", str(spec)), "has no deploy section")


def test_traffic_weights_are_checked_before_anything_else() -> None:
    _ok_error(cli("serve", "traffic", "demo", "v1=50", "v2=20"), "sum to 100, got 70")
    _ok_error(cli("serve", "traffic", "demo", "v1=lots"), "'v1=lots': expected VERSION=PERCENT")


def test_predict_input_errors(tmp_path: Path) -> None:
    _ok_error(cli("predict", "demo"), "exactly one of --input")
    _ok_error(cli("predict", "demo", "--input", "{bad", "--entity", "x"), "exactly one of --input")
    _ok_error(cli("predict", "demo", "--input", "{bad"), "not valid JSON")
    missing = tmp_path / "nope.json"
    _ok_error(cli("predict", "demo", "--input", str(missing)), "nope.json")


def test_predict_against_no_server_says_where_it_looked() -> None:
    result = cli("predict", "demo", "--entity", "c1", env={"PLATFORM_SERVE_URL": "http://127.0.0.1:9"})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "http://127.0.0.1:9/demo" in " ".join(result.stderr.split())
