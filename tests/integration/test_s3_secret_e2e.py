"""The S3 credentials Secret is checked where it is used: a step pod takes its keys by secretKeyRef, a
missing key keeps the pod waiting in CreateContainerConfigError (the process node does as the kubelet), and
the operator, which never reads that Secret, turns the kubelet's words into Ready=False S3SecretMissing
naming the Secret and the key. Once the key is there the pod starts and the asset goes on."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubemam.media.sample import make_sample
from kubemam_local.cluster import S3_SECRET
from tests.helpers import local_stack, wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]

NAMESPACE = "kubemam-s3check"
ASSET = {"apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset", "metadata": {"name": "clip"},
         "spec": {"source": {"uri": "s3://kubemam-library/incoming/clip.mov"}, "metadata": {"title": "Clip"},
                  "timeline": {"frameRate": "25", "startTimecode": "10:00:00:00"}}}


def _waiting(core: client.CoreV1Api) -> list[tuple[str, str]]:
    return [(s.state.waiting.reason, s.state.waiting.message)
            for pod in core.list_namespaced_pod(NAMESPACE, label_selector="kubemam.io/step=ingest").items
            for s in pod.status.container_statuses or [] if s.state and s.state.waiting]


def test_a_missing_s3_key_is_found_by_the_step_pod_and_named_on_the_asset(control_plane: Any,
                                                                          tmp_path: Path) -> None:
    with local_stack(control_plane, tmp_path, NAMESPACE) as stack:
        core = client.CoreV1Api(stack.api)
        master = make_sample(tmp_path / "clip.mov", width=320, height=180, seconds=8)
        stack.store.upload_file(str(master), "kubemam-library", "incoming/clip.mov")
        core.patch_namespaced_secret(S3_SECRET, NAMESPACE, [{"op": "remove", "path": "/data/AWS_SECRET_ACCESS_KEY"}])
        stack.custom.create("mediaassets", ASSET)

        ready = wait_for(lambda: (c := stack.custom.condition("mediaassets", "clip", "Ready"))
                         and c["reason"] == "S3SecretMissing" and c, timeout=120, what="S3SecretMissing")
        lacks = f"Secret {S3_SECRET!r} in namespace {NAMESPACE} lacks AWS_SECRET_ACCESS_KEY:"
        assert ready["message"].startswith(lacks), ready
        assert _waiting(core) == [("CreateContainerConfigError",
                                   f"couldn't find key AWS_SECRET_ACCESS_KEY in Secret {NAMESPACE}/{S3_SECRET}")]

        # The key back: the waiting pod starts (no new Job), the asset ingests.
        jobs = [j.metadata.name for j in client.BatchV1Api(stack.api).list_namespaced_job(NAMESPACE).items]
        core.patch_namespaced_secret(S3_SECRET, NAMESPACE,
                                     {"stringData": {"AWS_SECRET_ACCESS_KEY": stack.s3.secret_key}})
        wait_for(lambda: (stack.custom.condition("mediaassets", "clip", "Ingested") or {}).get("status") == "True",
                 timeout=180, what="the asset to be ingested")
        assert [j.metadata.name for j in client.BatchV1Api(stack.api).list_namespaced_job(NAMESPACE).items] == jobs
        assert (stack.custom.condition("mediaassets", "clip", "Ready") or {}).get("reason") != "S3SecretMissing"
