"""Kill the operator mid-ingest and start it again: one Job, one result, no duplicate outputs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from kubemam.storage.s3 import list_objects, make_client
from kubemam.storage.uri import S3Uri
from kubemam_local.cluster import S3_SECRET, provision_namespaces
from kubemam_local.controlplane import ControlPlane
from kubemam_local.crdinstall import install_crds
from kubemam_local.demo import upload_sources
from kubemam_local.minio import MinioServer
from kubemam_local.node import ProcessNode
from tests.helpers import EXAMPLES, Custom, example, start_operator, wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]


def test_operator_restart_mid_ingest_runs_one_job_with_one_result(control_plane: Any, tmp_path: Path) -> None:
    # An own cluster: the session's operator must not be the one that carries on.
    with ControlPlane(binaries=control_plane.binaries, scheduler=True) as cp, \
            MinioServer(buckets=["kubemam-library"]) as s3:
        api = config.new_client_from_config(str(cp.kubeconfig))
        install_crds(api)
        provision_namespaces(api, s3.access_key, s3.secret_key, ("kubemam-demo",))
        node = ProcessNode(api, tmp_path / "node")
        node.start()
        try:
            state = {"s3Endpoint": s3.endpoint, "s3CredentialsSecret": S3_SECRET, "binDir":
                     str(control_plane.binaries["kubectl"].parent), "kubeconfig": str(cp.kubeconfig)}
            upload_sources(state, EXAMPLES, tmp_path / "media", width=1280, height=720, seconds=20)
            log = tmp_path / "operator.log"
            operator = start_operator(cp.kubeconfig, s3.endpoint, log)
            custom = Custom(api, "kubemam-demo")
            asset = example("mediaasset.yaml")
            for ref in ("ladderRef", "archivePolicyRef"):
                asset["spec"].pop(ref)
            custom.create("mediaassets", asset)
            core = client.CoreV1Api(api)
            wait_for(lambda: any(p.status.phase == "Running" for p in core.list_namespaced_pod("kubemam-demo").items),
                     timeout=60, what="the ingest pod to run")
            operator.kill()  # no graceful shutdown: the worst case
            operator.wait()
            time.sleep(1)
            operator = start_operator(cp.kubeconfig, s3.endpoint, log)
            try:
                ingested = wait_for(lambda: (c := custom.condition("mediaassets", "coastal-s01e01", "Ingested"))
                                    and c["status"] != "Unknown" and c, timeout=180, what="ingest to finish")
            finally:
                operator.terminate()
                operator.wait(timeout=30)
            assert ingested["status"] == "True", log.read_text()[-3000:]
            jobs = client.BatchV1Api(api).list_namespaced_job("kubemam-demo").items
            assert len(jobs) == 1
            pods = core.list_namespaced_pod("kubemam-demo").items
            assert len(pods) == 1  # the pod was not run twice either
            s3c = make_client(s3.endpoint, s3.access_key, s3.secret_key)
            keys = [k for k, _ in list_objects(s3c, S3Uri.parse(
                "s3://kubemam-library/assets/kubemam-demo/coastal-s01e01/ingest"))]
            assert sum(k.endswith("manifest.json") for k in keys) == 1
            assert not any("/.tmp/" in k for k in keys)
        finally:
            node.stop()
