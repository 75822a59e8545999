"""Generate CustomResourceDefinitions from the pydantic models.

pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3 schema:
no $ref, no anyOf-with-null for optionals, boolean exclusive bounds, no
additionalProperties:false next to properties, and only formats it understands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kubemam.api.common import GROUP, VERSION
from kubemam.api.kinds import ALL_KINDS, CATEGORY, Kind

# Formats the API server validates or passes to CEL as typed values; others are dropped.
KNOWN_FORMATS = {"date-time", "date", "int32", "int64", "float", "double", "byte", "duration"}
# JSON Schema keywords pydantic emits that carry no meaning for the API server.
DROPPED_KEYS = {"title", "$defs", "examples"}


def _resolve(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, list):
        return [_resolve(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return {k: _resolve(v, defs) for k, v in schema.items()}


def _structural(schema: dict[str, Any]) -> dict[str, Any]:
    schema = dict(schema)
    any_of = schema.pop("anyOf", None)
    if any_of is not None:
        non_null = [s for s in any_of if s.get("type") != "null"]
        if len(non_null) != 1:
            raise ValueError(f"cannot express a union of {len(non_null)} types structurally: {any_of}")
        # An optional field: absence means null, so the non-null branch is the whole schema.
        schema.pop("default", None)
        schema = {**non_null[0], **schema}
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]
    for key in DROPPED_KEYS:
        schema.pop(key, None)
    if schema.get("format") not in KNOWN_FORMATS:
        schema.pop("format", None)
    if schema.get("additionalProperties") is False:
        schema.pop("additionalProperties")
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(schema.get(bound), (int, float)) and not isinstance(schema.get(bound), bool):
            schema[flag] = schema[bound]
            schema[bound] = True
    if "enum" in schema and "type" not in schema:
        schema["type"] = _enum_type(schema["enum"])
    if "default" in schema and schema["default"] is None:
        schema.pop("default")
    if "properties" in schema:
        schema["properties"] = {k: _structural(v) for k, v in schema["properties"].items()}
        schema["type"] = "object"
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = _structural(schema["additionalProperties"])
    if "items" in schema:
        schema["items"] = _structural(schema["items"])
    return schema


def _enum_type(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    if all(isinstance(v, int) for v in values):
        return "integer"
    return "string"


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model, every reference inlined."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    resolved = _resolve(raw, raw.get("$defs", {}))
    return _structural(resolved)


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    spec_schema = openapi_schema(kind.spec)
    status_schema = openapi_schema(kind.status)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/name": "kubemam", "app.kubernetes.io/part-of": "kubemam"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": [kind.short_name],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": kind.columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": _describe(kind),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render(kind: Kind) -> str:
    header = "# Generated by `kubemam crds` from operator/kubemam/api. Do not edit.\n"
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=120)


def crd_files() -> dict[str, str]:
    """File name → content of every CRD, as crds/ should hold them."""
    return {f"{kind.crd_name}.yaml": render(kind) for kind in ALL_KINDS}


def write(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in crd_files().items():
        path = out_dir / name
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
        written.append(path)
    return written


def stale(out_dir: Path) -> list[str]:
    """Names of CRD files in out_dir that differ from (or are missing against) the models."""
    expected = crd_files()
    problems = [n for n, c in expected.items() if not (out_dir / n).exists() or (out_dir / n).read_text() != c]
    extra = [p.name for p in out_dir.glob("*.yaml") if p.name not in expected]
    return sorted(problems + extra)


def _describe(kind: Kind) -> str:
    """The first line of the kind's API module docstring, which says what the kind is."""
    doc = sys.modules[kind.spec.__module__].__doc__ or kind.kind
    return doc.strip().splitlines()[0]
