"""Kopf's persistence: its diff base built without copying what it throws away, MediaAssets' diff base kept in
memory, and progress annotations without Kopf's marker (each cost a write per asset created).

For every event of an object with change handlers, Kopf builds the object's "essence" to compare with the last
handled one: it deep-copies the whole body, then drops the metadata (managedFields included) and the status but
for the fields some handler watches. Behind 1,000 assets created at once that copy was 15 % of the operator's
CPU. Here the body handed to Kopf's own build holds only what the essence can keep (the spec and other top-level
fields, labels, annotations, the owner references its key naming reads, and the watched status fields), so the
essence is the same, built from a fraction of the copying (tests/unit/test_diffbase.py compares the two).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf
from kopf._cogs.structs import dicts  # Kopf's own field-path parser, so a path means what it means to Kopf

DROPPED = ("metadata", "status")
KEPT_METADATA = ("labels", "annotations", "ownerReferences")


class LeanAnnotationsDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        extra = list(extra_fields or [])
        return super().build(body=kopf.Body(cast(kopf.RawBody, lean_body(body, extra))), extra_fields=extra)


def lean_body(body: Mapping[str, Any], extra_fields: Iterable[Any]) -> dict[str, Any]:
    """A shallow body with what an essence can keep; nothing of `body` is changed."""
    lean: dict[str, Any] = {key: value for key, value in body.items() if key not in DROPPED}
    meta = body.get("metadata") or {}
    lean["metadata"] = {key: meta[key] for key in KEPT_METADATA if key in meta}
    made = {id(lean["metadata"])}  # containers built here: only these are written into
    for field in extra_fields:
        path = dicts.parse_field(field)
        if not path or path[0] not in DROPPED:
            continue  # elsewhere the whole value is in the lean body already
        source: Any = body
        target: dict[str, Any] = lean
        for depth, part in enumerate(path):
            if part not in source:
                break
            source = source[part]
            if depth == len(path) - 1 or not isinstance(source, Mapping):
                target[part] = source  # the field, or what stands in its way (Kopf then refuses it as before)
                break
            if part not in target:
                target[part] = {}
                made.add(id(target[part]))
            elif id(target[part]) not in made:
                break  # a value kept whole already holds this field
            target = target[part]
    return lean


class MemoryDiffBaseStorage(kopf.DiffBaseStorage):
    """The diff base of one kind (MediaAssets) kept in the operator's memory, by uid; every other kind's in
    annotations (`others`).

    In an annotation, Kopf wrote each asset's last handled essence back to the asset after its creation
    handler: a patch of its own, an event of its own and a copy of the essence in every later event's body,
    for all 1,000 assets created at once (a quarter of the writes the operator made per asset; the API server
    was the limit). In memory, a restart finds no diff base: every asset is then a creation to Kopf, not a
    resume. Its handler is the same function (controllers/main.py), which reads the asset afresh unless the
    event came from Kopf's watch as an addition. Assets' diff bases stored in annotations by earlier versions
    stay on the objects, unused.
    """

    def __init__(self, kind: str, others: kopf.DiffBaseStorage) -> None:
        super().__init__()
        self._kind = kind
        self._others = others
        self._kept: dict[str, str] = {}  # uid -> the essence as compact JSON (a fifth of the dicts it encodes)

    def _ours(self, body: Mapping[str, Any]) -> str | None:
        return str(body["metadata"]["uid"]) if body.get("kind") == self._kind else None

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return self._others.build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        uid = self._ours(body)
        if uid is None:
            return self._others.fetch(body=body)
        text = self._kept.get(uid)
        return cast(kopf.BodyEssence, json.loads(text)) if text is not None else None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        uid = self._ours(body)
        if uid is None:
            self._others.store(body=body, patch=patch, essence=essence)
        else:
            self._kept[uid] = json.dumps(essence, separators=(",", ":"), sort_keys=True)

    def forget(self, uid: str) -> None:
        """The object is gone (its DELETED event)."""
        self._kept.pop(uid, None)

    def __len__(self) -> int:
        return len(self._kept)


class UnmarkedAnnotationsProgressStorage(kopf.AnnotationsProgressStorage):
    """Kopf's progress annotations, without the `<prefix>/kopf-managed: yes` marker Kopf adds to every object it
    stores anything on. The marker tells other Kopf operators that the prefix's annotations are Kopf's and not
    part of an object's essence. The prefix here is kubemam's own API group, and kubemam's Kopf drops every
    annotation under it from the essence itself (`clear`). The marker was a merge patch of its own on the creation
    of every asset (beside the finalizer's JSON patch): one of two writes Kopf made per asset."""

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        return None

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        """Kopf deep-copies every essence here, twice an event, before it drops the prefix's annotations. Both
        essences it passes are its own fresh copies (built from the body, or parsed from the stored base): one
        with none of those annotations is returned as it is."""
        annotations = (essence.get("metadata") or {}).get("annotations") or {}
        if not any(key.startswith(f"{self.prefix}/") for key in annotations):
            return essence
        return super().clear(essence=essence)
