"""The machine-readable views and describe for ladders, windows and policies, pure: dicts and a clock in."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import yaml

from kubemam.views import describe_document, dump, render_window, status_document
from tests.helpers import example

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def _asset(**status: object) -> dict[str, object]:
    return {**example("mediaasset.yaml"), "status": status}


def test_status_document_carries_the_tables_facts_as_values() -> None:
    asset = _asset(phase="Archiving", jobs=[{"step": "archive", "name": "a-archive-1", "state": "Running"}],
                   conditions=[{"type": "Ready", "status": "False", "reason": "ArchiveRunning", "message": "m"}],
                   storage={"tier": "hot", "copies": [{"location": "library", "verifiedAt": "2027-03-01T11:00:00Z"}]},
                   distribution=[{"target": "svod-no", "channel": "svod", "state": "Published"}])
    document = status_document([asset], [example("rightswindow.yaml")], [example("archivepolicy.yaml")], NOW,
                               "namespace media")
    [summary] = document["assets"]
    assert summary["phase"] == "Archiving" and summary["ready"]["reason"] == "ArchiveRunning"
    assert summary["step"] == {"step": "archive", "state": "Running", "job": "a-archive-1"}
    assert summary["archive"] == {"tier": "hot", "verifiedCopies": 1, "minCopies": 3}  # the policy's minimum
    assert summary["distribution"][0]["state"] == "Published"
    [window] = document["windows"]
    assert window["state"] == "Open" and window["nextTransition"] == "2027-12-31T23:59:59Z"
    assert json.loads(dump(document, "json")) == yaml.safe_load(dump(document, "yaml"))


def test_describe_document_leaves_out_kopfs_bookkeeping() -> None:
    body = example("transcodeladder.yaml")
    body["metadata"] = {**body["metadata"], "annotations": {"kubemam.io/last-handled-configuration": "{…}",
                                                            "team": "ott"}, "managedFields": [{}]}
    document = describe_document(body, {"assets": ["ep1"]})
    assert document["object"]["metadata"]["annotations"] == {"team": "ott"}
    assert "managedFields" not in document["object"]["metadata"] and document["assets"] == ["ep1"]


def test_a_window_names_its_selector_as_kubectl_spells_it() -> None:
    window = example("rightswindow.yaml")
    window["spec"]["assets"] = {"selector": {"matchLabels": {"series": "coastal"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["gold", "silver"]}, {"key": "draft", "operator": "DoesNotExist"}]}}
    text = render_window(window, NOW)
    assert "Selects:        series=coastal,tier in (gold,silver),!draft" in text
    assert "State:          Open" in text and "closes in" in text
