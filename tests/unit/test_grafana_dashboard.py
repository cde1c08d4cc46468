"""cluster/grafana/mlplatform-dashboard.json and cluster/prometheus/prometheus.yml, without a
Grafana or Prometheus: the dashboard is valid JSON, every panel queries something, and every
metric its PromQL names is one the platform exports (monitoring.metrics.METRIC_NAMES, the
exact series names Ray's agent exports, which tests/integration/test_metrics.py finds on a
live endpoint) or one of Ray's own that the same integration test found there."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlplatform.monitoring.metrics import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "cluster" / "grafana" / "mlplatform-dashboard.json"
PROMETHEUS = ROOT / "cluster" / "prometheus" / "prometheus.yml"

# Ray's own metrics the dashboard's cluster row uses; each was found on the session cluster's
# endpoint (asserted by tests/integration/test_metrics.py).
RAY_OWN_METRICS: list[str] = ["ray_node_cpu_utilization", "ray_node_cpu_count", "ray_node_mem_used",
                              "ray_node_mem_total", "ray_object_store_memory", "ray_cluster_active_nodes"]

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
             "unless", "offset", "inf", "nan"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are neither functions,
    aggregations, keywords, label names (in {...} or grouping clauses), strings nor durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, $variables
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery windows
    text = _GROUPING.sub(" ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.extend(p.get("panels", []) if p.get("type") == "row" else [p])
    return out


def _expressions(dash: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in _panels(dash) for t in p["targets"]]
    for var in dash.get("templating", {}).get("list", []):
        query = var.get("query")
        if var.get("type") == "query":
            inner = query["query"] if isinstance(query, dict) else query
            exprs.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", inner))
    return exprs


def test_the_metric_name_parser() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, version) (rate(ray_a_bucket{pipeline=~"$p", '
            'kind!="x"}[5m]))) / ignoring (class) group_left sum(ray_b_total offset 1h) > bool 0')
    assert metric_names(expr) == {"ray_a_bucket", "ray_b_total"}
    assert metric_names('ray_x{pipeline=~"$pipeline"}') == {"ray_x"}


def test_the_dashboard_is_valid_json_with_a_query_in_every_panel() -> None:
    dash = _dashboard()
    assert dash["title"] and dash["uid"]
    panels = _panels(dash)
    assert len(panels) >= 10
    for p in panels:
        assert p["targets"], f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t["expr"].strip() and metric_names(t["expr"]), (p["title"], t)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_every_queried_metric_is_exported() -> None:
    known = set(METRIC_NAMES) | set(RAY_OWN_METRICS)
    used = {n for e in _expressions(_dashboard()) for n in metric_names(e)}
    assert used - known == set(), f"the dashboard queries metrics nobody exports: {sorted(used - known)}"
    # Both levels are shown: every platform instrument is used somewhere (a regression histogram
    # and a classifier's scores alike) and the cluster's own metrics.
    bases = {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in used}
    assert {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in METRIC_NAMES} <= bases
    assert set(RAY_OWN_METRICS) <= used


@pytest.mark.parametrize("wrong", ["ray_mlplatform_runs", "mlplatform_runs_total",
                                   "ray_mlplatform_serve_latency_ms", "ray_mlplatform_live_quality_total"])
def test_a_misspelt_or_unsuffixed_name_is_caught(wrong: str) -> None:
    """Counters are exported with `_total`, histograms only as _bucket/_sum/_count, all with Ray's
    `ray_` prefix: a query that forgets any of it selects nothing in Prometheus."""
    assert wrong not in set(METRIC_NAMES) | set(RAY_OWN_METRICS)
    assert metric_names(f"sum(rate({wrong}[5m]))") == {wrong}


def test_the_prometheus_config_reads_rays_service_discovery_file() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = config["scrape_configs"]
    files = [f for job in jobs for sd in job.get("file_sd_configs", []) for f in sd["files"]]
    assert files and all(f.endswith("prom_metrics_service_discovery.json") for f in files)
