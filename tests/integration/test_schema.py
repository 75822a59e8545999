"""The generated CRDs on the real API server: examples apply, bad manifests are refused by name."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.helpers import EXAMPLES, Custom, example

pytestmark = pytest.mark.integration


def test_every_example_applies(kubectl: Any, namespace: str) -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert len(files) >= 4
    result = kubectl("apply", "-n", namespace, "-f", str(EXAMPLES))
    for path in files:
        doc = yaml.safe_load(path.read_text())
        group = ".kubemam.io" if doc["apiVersion"].startswith("kubemam.io/") else ""
        assert f"{doc['kind'].lower()}{group}/{doc['metadata']['name']}" in result.stdout


def test_kubectl_get_shows_printer_columns(kubectl: Any, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES))
    out = kubectl("get", "ma,tl,rw,ap", "-n", namespace).stdout
    header_lines = [line for line in out.splitlines() if line.startswith("NAME")]
    assert any(h.split()[:4] == ["NAME", "READY", "PHASE", "PROGRESS"] for h in header_lines), out
    assert any("RENDITIONS" in h for h in header_lines), out
    assert any("START" in h and "END" in h for h in header_lines), out
    assert any("MINCOPIES" in h for h in header_lines), out
    # The category groups all four kinds.
    by_category = kubectl("get", "kubemam", "-n", namespace, "-o", "name").stdout.split()
    assert len(by_category) == 4, by_category


def _refusal(api_client: Any, namespace: str, plural: str, body: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as err:
        Custom(api_client, namespace).create(plural, body)
    assert err.value.status == 422, err.value.body
    return str(err.value.body)


def test_rights_window_end_before_start_is_refused(api_client: Any, namespace: str) -> None:
    body = example("rightswindow.yaml")
    body["spec"]["start"], body["spec"]["end"] = body["spec"]["end"], body["spec"]["start"]
    message = _refusal(api_client, namespace, "rightswindows", body)
    assert "spec.end" in message and "end must be after start" in message


def test_unknown_territory_is_refused(api_client: Any, namespace: str) -> None:
    body = example("rightswindow.yaml")
    body["spec"]["territories"] = ["NO", "XX"]
    message = _refusal(api_client, namespace, "rightswindows", body)
    assert "spec.territories[1]" in message and "Unsupported value" in message


def test_duplicate_rendition_names_are_refused(api_client: Any, namespace: str) -> None:
    body = example("transcodeladder.yaml")
    body["spec"]["renditions"].append(copy.deepcopy(body["spec"]["renditions"][0]))
    message = _refusal(api_client, namespace, "transcodeladders", body)
    assert "spec.renditions" in message and "rendition names must be unique" in message


def test_a_level_too_low_for_the_frame_size_is_refused(api_client: Any, namespace: str) -> None:
    body = example("transcodeladder.yaml")
    body["spec"]["renditions"][0]["level"] = "3.1"  # 1920x1080 needs H.264 level 4 or above
    body["spec"]["renditions"][4]["level"] = "4.1"  # 3840x2160 needs HEVC level 5 or above
    message = _refusal(api_client, namespace, "transcodeladders", body)
    assert "spec.renditions[0].level" in message and "spec.renditions[4].level" in message
    assert "level is too low" in message
    body = example("transcodeladder.yaml")
    body["spec"]["renditions"][0]["level"] = "4"  # "4" and "4.0" are the same level
    body["metadata"]["name"] = "level-4-ok"
    Custom(api_client, namespace).create("transcodeladders", body)


def test_bad_timecode_is_refused(api_client: Any, namespace: str) -> None:
    body = example("mediaasset.yaml")
    body["spec"]["markers"][0]["start"] = "10:00:61:00"
    message = _refusal(api_client, namespace, "mediaassets", body)
    assert "spec.markers[0].start" in message


def test_ttml_captions_are_refused_by_the_schema_not_by_the_package_step(api_client: Any, namespace: str) -> None:
    body = example("mediaasset.yaml")
    body["spec"]["captions"] = [{"language": "en", "format": "ttml", "uri": "s3://kubemam-library/captions/en.ttml"}]
    message = _refusal(api_client, namespace, "mediaassets", body)
    assert "spec.captions[0].format: Unsupported value" in message and "ttml" in message and "webvtt" in message


def test_min_copies_beyond_locations_is_refused(api_client: Any, namespace: str) -> None:
    body = example("archivepolicy.yaml")
    body["spec"]["copies"]["minCopies"] = 5
    message = _refusal(api_client, namespace, "archivepolicies", body)
    assert "spec.copies.minCopies" in message and "exceeds" in message


def test_fairplay_without_cbcs_is_refused(api_client: Any, namespace: str) -> None:
    body = example("transcodeladder.yaml")
    body["spec"]["drm"]["systems"] = ["fairplay"]
    message = _refusal(api_client, namespace, "transcodeladders", body)
    assert "spec.drm.scheme" in message and "cbcs" in message


def test_unknown_field_is_refused(api_client: Any, namespace: str, kubectl: Any) -> None:
    body = example("mediaasset.yaml")
    body["spec"]["sauce"] = {"uri": "s3://x/y"}
    result = kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.sauce"' in result.stderr


def test_status_is_a_subresource(api_client: Any, namespace: str) -> None:
    """A spec write bumps generation; a status write does not (Kopf and conditions rely on it)."""
    custom = Custom(api_client, namespace)
    created = custom.create("archivepolicies", example("archivepolicy.yaml"))
    generation = created["metadata"]["generation"]
    custom.api.patch_namespaced_custom_object_status(
        "kubemam.io", "v1alpha1", namespace, "archivepolicies", "library-321",
        {"status": {"phase": "Active"}})
    after = custom.get("archivepolicies", "library-321")
    assert after["metadata"]["generation"] == generation
    assert after["status"]["phase"] == "Active"
