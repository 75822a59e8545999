"""crds/ is generated from the models, and every schema is structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kubemam.api import crdgen
from kubemam.api.kinds import ALL_KINDS

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_crds_directory_matches_the_models() -> None:
    stale = crdgen.stale(CRDS)
    assert not stale, f"crds/ differs from the models for {stale}: run `kubemam crds`"


def _walk(schema: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(schema, dict):
        found.append((path, schema))
        for key in ("properties",):
            for name, sub in (schema.get(key) or {}).items():
                found += _walk(sub, f"{path}.{name}")
        if isinstance(schema.get("items"), dict):
            found += _walk(schema["items"], f"{path}[]")
        if isinstance(schema.get("additionalProperties"), dict):
            found += _walk(schema["additionalProperties"], f"{path}{{}}")
    return found


def test_schemas_are_structural() -> None:
    for kind in ALL_KINDS:
        root = crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert "x-kubernetes-preserve-unknown-fields" not in root
        for path, node in _walk(root):
            assert "type" in node, f"{kind.kind}{path} has no type"
            for banned in ("$ref", "anyOf", "oneOf", "allOf", "const", "title", "$defs"):
                assert banned not in node, f"{kind.kind}{path} carries {banned}"
            if "properties" in node:
                assert node.get("additionalProperties") in (None,), f"{kind.kind}{path}"


def test_crd_names_columns_and_category() -> None:
    docs = {k.short_name: yaml.safe_load((CRDS / f"{k.crd_name}.yaml").read_text()) for k in ALL_KINDS}
    assert set(docs) == {"ma", "tl", "rw", "ap"}
    for doc in docs.values():
        version = doc["spec"]["versions"][0]
        assert doc["spec"]["names"]["categories"] == ["kubemam"]
        assert version["subresources"] == {"status": {}}
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns[:2] == ["Ready", "Phase"] and "Age" in columns
    ma_columns = [c["name"] for c in docs["ma"]["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert "Progress" in ma_columns


def test_territories_are_the_iso_list() -> None:
    schema = crdgen.openapi_schema(ALL_KINDS[2].spec)
    enum = schema["properties"]["territories"]["items"]["enum"]
    assert len(enum) == 249 and "NO" in enum and "GB" in enum and "UK" not in enum
