"""Every metric the Grafana dashboard or an alert queries is one the operator exports, with the
labels and histogram buckets it queries (charts/kubemam/dashboards, charts/kubemam/rules); every alert
has a runbook in docs/runbooks.md."""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.utils import floatToGoString

import kubemam.metrics  # noqa: F401 - registers the operator's metrics in REGISTRY
from kubemam import __version__

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubemam"
DASHBOARD = CHART / "dashboards" / "kubemam.json"
RULES = CHART / "rules" / "kubemam.rules.yaml"
RUNBOOKS = REPO / "docs" / "runbooks.md"

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
            "summary": ("_sum", "_count", ""), "info": ("_info",)}
NAME = re.compile(r"\bkubemam_[a-z0-9_]+\b")
SELECTOR = re.compile(r"\b(kubemam_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"([^\"]*)\"")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def _exported() -> dict[str, tuple[Any, set[str]]]:
    """Sample name (kubemam_x_total, kubemam_y_bucket, …) → (collector, its label names)."""
    names: dict[str, tuple[Any, set[str]]] = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("kubemam_"):
            continue
        collector = REGISTRY._names_to_collectors[family.name if family.type != "counter"
                                                  else f"{family.name}_total"]
        labels = set(getattr(collector, "_labelnames", ()))
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = (collector, labels)
    return names


def _dashboard_exprs() -> Iterator[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels") or [])

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets") or []:
            yield f"panel {panel['title']!r}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield f"variable {variable['name']}", query["query"] if isinstance(query, dict) else query


def _rule_exprs() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule.get('alert') or rule.get('record')}", str(rule["expr"])


EXPRS = [*_dashboard_exprs(), *_rule_exprs()]


def test_the_dashboard_and_the_rules_query_something() -> None:
    assert sum(1 for where, _ in EXPRS if where.startswith("panel")) >= 20
    alerts = {where for where, _ in EXPRS if where.startswith("alert")}
    assert {"alert KubemamOperatorDown", "alert KubemamTakedownOverdue", "alert KubemamJobsFailing",
            "alert KubemamArchiveUnderReplicated", "alert KubemamFixityFailure"} <= alerts


@pytest.mark.parametrize(("where", "expr"), EXPRS, ids=[where for where, _ in EXPRS])
def test_every_queried_metric_is_exported(where: str, expr: str) -> None:
    exported = _exported()
    used = set(NAME.findall(expr))
    assert used, f"{where} queries no kubemam metric: {expr}"
    missing = sorted(used - exported.keys())
    assert not missing, f"{where} queries {missing}, which the operator does not export (kubemam.metrics)"

    # Labels in selectors and in by()/without() must be labels of the metrics queried.
    known = set().union(*(exported[name][1] for name in used))
    for metric, matchers in SELECTOR.findall(expr):
        _, labels = exported[metric]
        for label, value in MATCHER.findall(matchers):
            if label == "le":
                assert metric.endswith("_bucket"), f"{where}: le on {metric}"
                buckets = {floatToGoString(b) for b in exported[metric][0]._upper_bounds}
                assert value in buckets, f"{where}: {metric} has no bucket le={value!r} (buckets {sorted(buckets)})"
            else:
                assert label in labels, f"{where}: {metric} has no label {label!r} (labels {sorted(labels)})"
    for grouping in GROUPING.findall(expr):
        for label in (g.strip() for g in grouping.split(",") if g.strip()):
            assert label in known | {"le"}, f"{where}: groups by {label!r}, a label of none of {sorted(used)}"


def test_the_alerts_carry_a_severity_and_a_summary() -> None:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def _alerts() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_a_runbook_whose_anchor_exists() -> None:
    home = yaml.safe_load((CHART / "Chart.yaml").read_text())["home"]
    base = f"{home}/blob/main/docs/runbooks.md#"
    anchors = {_github_anchor(line.lstrip("#")) for line in RUNBOOKS.read_text().splitlines()
               if re.match(r"#{1,6} ", line)}
    for rule in _alerts():
        url = rule["annotations"].get("runbook_url", "")
        assert url.startswith(base), f"{rule['alert']}: runbook_url {url!r} is not under {base}"
        anchor = url.removeprefix(base)
        assert anchor in anchors, f"{rule['alert']}: docs/runbooks.md has no heading with the anchor #{anchor}"
        assert anchor == rule["alert"].lower(), f"{rule['alert']}: its runbook is its own heading, not #{anchor}"


def test_the_operator_down_alert_reads_build_info_which_is_always_1() -> None:
    (down,) = [rule for rule in _alerts() if rule["alert"] == "KubemamOperatorDown"]
    assert down["expr"].strip() == "absent(kubemam_build_info)" and down["labels"]["severity"] == "critical"
    (family,) = [f for f in REGISTRY.collect() if f.name == "kubemam_build_info"]
    (sample,) = family.samples
    assert sample.value == 1
    assert sample.labels == {"version": __version__, "python": platform.python_version(),
                             "kopf": metadata.version("kopf")}
