"""The chart's generated text is current: the README's values table (values.schema.json and values.yaml)
and Chart.yaml's Artifact Hub CRD annotations (files/crds and examples/). With KUBEMAM_UPDATE_GOLDEN=1 the
files are rewritten instead (as `make chart-readme` does); review the diff."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import chart_readme

UPDATE_GOLDEN = os.environ.get("KUBEMAM_UPDATE_GOLDEN") == "1"
SCHEMA: dict[str, Any] = json.loads(chart_readme.SCHEMA.read_text())
VALUES: dict[str, Any] = yaml.safe_load(chart_readme.VALUES.read_text())


@pytest.mark.parametrize("path", list(chart_readme.expected()), ids=lambda p: p.name)
def test_generated_text_is_current(path: Path) -> None:
    text = chart_readme.expected()[path]
    if UPDATE_GOLDEN and path.read_text() != text:
        path.write_text(text)
    assert path.read_text() == text, (f"{path.relative_to(chart_readme.REPO)} differs from what tests/chart_readme.py "
                                      "generates: run `make chart-readme` and review the diff")


def _properties(node: dict[str, Any], where: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, child in (node.get("properties") or {}).items():
        out.append((f"{where}{name}", child))
        out += _properties(child, f"{where}{name}.")
    return out


def test_every_value_in_the_schema_has_a_description() -> None:
    documented = _properties(SCHEMA, "") + [
        (f"definitions.{name}.{key}", child) for name, definition in SCHEMA["definitions"].items()
        for key, child in _properties(definition, "")]
    missing = [key for key, node in documented if not node.get("description")]  # list items: by their list
    assert not missing, f"values.schema.json: no description for {missing}"


def _leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out.append(f"{prefix}{key}")
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def test_the_table_lists_every_value_with_its_default() -> None:
    rows = {row.key: row for row in chart_readme.rows(SCHEMA, VALUES)}
    # Maps that are values themselves (labels, resources' requests) are rows; their keys are not.
    free = {key for key, row in rows.items() if row.type == "object" and row.default}
    expected = {key for key in _leaves(VALUES) if not any(key.startswith(f"{f}.") for f in free)}
    assert expected <= rows.keys(), f"values.yaml has {sorted(expected - rows.keys())}, which the table lacks"
    assert {key for key, row in rows.items() if row.default == "unset"} == {"global", "resources.claims"}
    assert rows["jobs.retryMaxSeconds"].default == "1800"
    assert rows["logFormat"].type == 'one of "text", "json"'
    assert rows["s3.credentialsSecret"].description


def test_the_artifacthub_annotations_name_the_four_kinds_and_their_examples() -> None:
    chart = yaml.safe_load(chart_readme.CHART_YAML.read_text())
    annotations = chart["annotations"]
    crds = yaml.safe_load(annotations["artifacthub.io/crds"])
    assert sorted(c["kind"] for c in crds) == ["ArchivePolicy", "MediaAsset", "RightsWindow", "TranscodeLadder"]
    assert all(c["description"] and c["version"] and c["name"].endswith(".kubemam.io") for c in crds)
    examples = yaml.safe_load(annotations["artifacthub.io/crdsExamples"])
    assert sorted(e["kind"] for e in examples) == sorted(c["kind"] for c in crds)
    assert annotations["artifacthub.io/operator"] == "true" and annotations["artifacthub.io/prerelease"] == "true"
    assert annotations["artifacthub.io/operatorCapabilities"] in (
        "Basic Install", "Seamless Upgrades", "Full Lifecycle", "Deep Insights", "Auto Pilot")
    assert {link["name"] for link in yaml.safe_load(annotations["artifacthub.io/links"])}
