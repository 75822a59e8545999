"""The lean diff base (controllers/diffbase.py) builds the very essence Kopf's own build does, and copies none
of what the essence drops: a difference would make Kopf see a change (and run the update handlers) on the first
event of every asset after an upgrade."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from kubemam.api.common import GROUP
from kubemam.controllers.diffbase import LeanAnnotationsDiffBaseStorage, lean_body

# The status fields the operator's field handlers watch (controllers/main.py asset_distribution_inputs).
WATCHED = ["status.packages", "metadata.labels", "status.qcApproval", "status.qc.verdict"]


def _asset(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset",
        "metadata": {
            "name": "clip", "namespace": "media", "uid": "u-1", "resourceVersion": "42", "generation": 3,
            "labels": {"series": "coastal"},
            "annotations": {"kubemam.io/retry": "1", f"{GROUP}/last-handled-configuration": '{"spec": {}}',
                            f"{GROUP}/asset": '{"started": "2026-12-01T00:00:00Z"}',
                            "kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "news"},
            "finalizers": [f"{GROUP}/finalizer"],
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:x": {}}}}] * 50,
        },
        "spec": {"source": {"uri": "s3://lib/a.mov"}, "metadata": {"title": "A"}, "markers": [{"at": "00:00:01:00"}]},
        "status": {"phase": "Ready", "technical": {"streams": [{"codec": "h264"}] * 20}, **status},
    }


def _built(storage: kopf.AnnotationsDiffBaseStorage, body: dict[str, Any], extra: list[Any]) -> Any:
    try:
        return storage.build(body=kopf.Body(body), extra_fields=extra)
    except TypeError as err:  # Kopf's answer to a watched field under a non-mapping: the same from both
        return ("TypeError", str(err))


def _stock_and_lean(body: dict[str, Any], extra: list[Any]) -> tuple[Any, Any]:
    stock = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    lean = LeanAnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    return _built(stock, body, extra), _built(lean, body, extra)


@pytest.mark.parametrize("status", [
    {},
    {"packages": [{"format": "hls"}], "qc": {"verdict": "Passed", "issues": [1, 2]}, "qcApproval": {"by": "x"}},
    {"qc": {"issues": []}},  # a watched field's parent without the field
    {"qc": "not a mapping"},
])
@pytest.mark.parametrize("extra", [WATCHED, [], [("status", "qc", "verdict")],
                                   ["spec.source", "metadata.labels.series"]])
def test_the_essence_is_kopfs_own(status: dict[str, Any], extra: list[Any]) -> None:
    body = _asset(**status)
    before = copy.deepcopy(body)
    stock, lean = _stock_and_lean(body, extra)
    assert lean == stock
    assert body == before, "the body Kopf holds was changed"


def test_what_the_essence_drops_is_not_in_the_lean_body() -> None:
    lean = lean_body(_asset(packages=[{"format": "hls"}]), WATCHED)
    assert set(lean["metadata"]) == {"labels", "annotations"}
    assert lean["status"] == {"packages": [{"format": "hls"}]}


def test_assets_diff_bases_stay_in_memory_and_other_kinds_go_to_annotations() -> None:
    from kubemam.controllers.diffbase import MemoryDiffBaseStorage

    storage = MemoryDiffBaseStorage("MediaAsset", LeanAnnotationsDiffBaseStorage(prefix=GROUP,
                                                                                key="last-handled-configuration"))
    asset = kopf.Body(_asset(packages=[{"name": "ott"}]))
    assert storage.fetch(body=asset) is None  # new to this process: a creation to Kopf, whatever the annotations say
    essence = storage.build(body=asset, extra_fields=WATCHED)
    patch = kopf.Patch()
    storage.store(body=asset, patch=patch, essence=essence)
    assert not patch  # nothing written to the asset: no patch, no event
    assert storage.fetch(body=asset) == essence and len(storage) == 1
    assert storage.fetch(body=kopf.Body({**_asset(), "metadata": {**_asset()["metadata"], "uid": "u-2"}})) is None

    ladder = kopf.Body({"apiVersion": "kubemam.io/v1alpha1", "kind": "TranscodeLadder",
                        "metadata": {"name": "ott", "namespace": "media", "uid": "l-1"}, "spec": {"rungs": []}})
    ladder_essence = storage.build(body=ladder)
    patch = kopf.Patch()
    storage.store(body=ladder, patch=patch, essence=ladder_essence)
    assert f"{GROUP}/last-handled-configuration" in patch["metadata"]["annotations"]
    assert len(storage) == 1  # a ladder's is on the ladder, not here

    storage.forget("u-1")
    assert storage.fetch(body=asset) is None and len(storage) == 0


@pytest.mark.parametrize("status", [{}, {"packages": [{"format": "hls"}]}])
def test_progress_clear_gives_kopfs_essence_and_copies_only_when_it_drops_something(status: dict[str, Any]) -> None:
    from kubemam.controllers.diffbase import UnmarkedAnnotationsProgressStorage

    stock = kopf.AnnotationsProgressStorage(prefix=GROUP)
    ours = UnmarkedAnnotationsProgressStorage(prefix=GROUP)
    built = LeanAnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    essence = built.build(body=kopf.Body(_asset(**status)), extra_fields=WATCHED)
    # The stock diff base keeps the prefix's progress annotations; the clear drops them (and copies).
    essence["metadata"]["annotations"][f"{GROUP}/asset"] = '{"started": "2026-12-01T00:00:00Z"}'
    assert ours.clear(essence=copy.deepcopy(essence)) == stock.clear(essence=copy.deepcopy(essence))
    cleared = ours.clear(essence=essence)
    assert f"{GROUP}/asset" not in cleared["metadata"]["annotations"]
    assert f"{GROUP}/asset" in essence["metadata"]["annotations"], "the essence it was given was changed"
    # Nothing of the prefix left: the same essence back, not a copy of it.
    assert ours.clear(essence=cleared) is cleared and ours.clear(essence=cleared) == stock.clear(essence=cleared)
