"""What is generated in the Helm chart, from the files that hold the facts:

- the values table of charts/kubemam/README.md (between its `values-table` markers), from
  values.schema.json (key path, type, description) and values.yaml (default);
- the Artifact Hub annotations `artifacthub.io/crds` (from the chart's CRDs, files/crds/) and
  `artifacthub.io/crdsExamples` (from examples/*.yaml) in Chart.yaml.

`make chart-readme` (python -m tests.chart_readme) writes them; tests/unit/test_chart_readme.py fails
while a file differs from what this generates (KUBEMAM_UPDATE_GOLDEN=1 rewrites it instead).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "kubemam"
SCHEMA = CHART / "values.schema.json"
VALUES = CHART / "values.yaml"
README = CHART / "README.md"
CHART_YAML = CHART / "Chart.yaml"
CRDS = CHART / "files" / "crds"
EXAMPLES = REPO / "examples"

TABLE_START = "<!-- values-table:start: generated from values.schema.json and values.yaml by `make chart-readme` -->"
TABLE_END = "<!-- values-table:end -->"
GENERATED_ANNOTATIONS = ("artifacthub.io/crds", "artifacthub.io/crdsExamples")
_UNSET = object()


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str  # values.yaml's value as JSON; "unset" where values.yaml has none; "" for an object of values
    description: str


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The node with its $ref's keywords under its own (a description beside a $ref wins)."""
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolve(schema, target), **{k: v for k, v in node.items() if k != "$ref"}}


def _type(node: dict[str, Any]) -> str:
    if "const" in node:
        return f"const {json.dumps(node['const'])}"
    if "enum" in node:
        return "one of " + ", ".join(json.dumps(v) for v in node["enum"])
    kind = node.get("type", "any")
    return " or ".join(kind) if isinstance(kind, list) else str(kind)


def _default(value: Any) -> str:
    if value is _UNSET:
        return "unset"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def rows(schema: dict[str, Any], values: dict[str, Any]) -> list[Row]:
    """Every value, depth first in the schema's order: objects with properties of their own are a row
    (their description) followed by a row for each property."""
    out: list[Row] = []

    def walk(properties: dict[str, Any], defaults: Any, prefix: str) -> None:
        for name, raw in properties.items():
            node = _resolve(schema, raw)
            key = f"{prefix}{name}"
            default = defaults.get(name, _UNSET) if isinstance(defaults, dict) else _UNSET
            description = node.get("description", "")
            if node.get("type") == "object" and "properties" in node:
                out.append(Row(key, "object", "", description))
                walk(node["properties"], default, f"{key}.")
            else:
                out.append(Row(key, _type(node), _default(default), description))

    walk(schema["properties"], values, "")
    return out


def _markdown(text: str) -> str:
    """Text for a table cell: outside `code`, < > & * are escaped; | everywhere."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = (parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                    .replace("*", "\\*"))
    return "`".join(parts).replace("|", "\\|")


def values_table(schema: dict[str, Any], values: dict[str, Any]) -> str:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for row in rows(schema, values):
        default = f"`{row.default}`" if row.default and row.default != "unset" else row.default
        lines.append(f"| `{row.key}` | {_markdown(row.type)} | {_markdown(default)} | {_markdown(row.description)} |")
    return "\n".join(lines) + "\n"


def readme_text(current: str, schema: dict[str, Any], values: dict[str, Any]) -> str:
    start, end = current.find(TABLE_START), current.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"{README} needs the markers {TABLE_START!r} and {TABLE_END!r}")
    return current[:start + len(TABLE_START)] + "\n" + values_table(schema, values) + current[end:]


def artifacthub_crds(crds: Path = CRDS) -> list[dict[str, str]]:
    """One entry per CRD: kind, storage version, name, display name, and the schema's own description."""
    out = []
    for path in sorted(crds.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        kind = spec["names"]["kind"]
        (version,) = [v for v in spec["versions"] if v.get("storage")]
        description = version["schema"]["openAPIV3Schema"].get("description", "").removeprefix(f"{kind}: ")
        out.append({"kind": kind, "version": version["name"], "name": crd["metadata"]["name"],
                    "displayName": re.sub(r"(?<=[a-z])(?=[A-Z])", " ", kind),
                    "description": description[:1].upper() + description[1:]})
    return out


def crds_examples(examples: Path = EXAMPLES, crds: Path = CRDS) -> list[dict[str, Any]]:
    """The examples of the chart's kinds, as examples/ has them (comments aside)."""
    kinds = {crd["kind"] for crd in artifacthub_crds(crds)}
    return [doc for path in sorted(examples.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("kind") in kinds]


def _block(objects: list[Any], indent: str) -> str:
    text = yaml.safe_dump(objects, sort_keys=False, allow_unicode=True, width=100_000)
    return "".join(f"{indent}{line}\n" for line in text.splitlines())


def chart_yaml_text(current: str, crds: Path = CRDS, examples: Path = EXAMPLES) -> str:
    """Chart.yaml with the generated annotations' block scalars replaced, everything else as it is."""
    generated = {"artifacthub.io/crds": artifacthub_crds(crds),
                 "artifacthub.io/crdsExamples": crds_examples(examples, crds)}
    lines = current.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        match = re.fullmatch(r"( +)([\w./-]+): \|\n", line)
        if match and match.group(2) in generated:
            indent = match.group(1) + "  "
            out.append(line)
            out.append(_block(generated.pop(match.group(2)), indent))
            i += 1
            while i < len(lines) and lines[i].startswith(indent):
                i += 1
            continue
        out.append(line)
        i += 1
    if generated:
        raise ValueError(f"{CHART_YAML} has no block-scalar annotations {sorted(generated)} (`key: |`) to fill")
    return "".join(out)


def expected() -> dict[Path, str]:
    """Each generated file as it should read now."""
    schema = json.loads(SCHEMA.read_text())
    values = yaml.safe_load(VALUES.read_text())
    return {README: readme_text(README.read_text(), schema, values),
            CHART_YAML: chart_yaml_text(CHART_YAML.read_text())}


def main() -> int:
    for path, text in expected().items():
        if path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
        else:
            print(f"{path.relative_to(REPO)} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
