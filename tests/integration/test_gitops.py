"""The GitOps health checks of docs/gitops.md, run as the tools run them, against objects the real operator
wrote: the Argo CD Lua script in gopher-lua (Argo CD's interpreter) and the Flux healthCheckExprs in cel-go
with optional types (kustomize-controller's evaluator) — tests/gitops/checker, built with Go.

The scripts are read from docs/gitops.md itself, so the documentation cannot drift from what is tested.
Every phase: no status yet, progressing, waiting for another object, failed, ready, and a status older
than the spec. Both tools must agree: Healthy ↔ current, Progressing ↔ inProgress, Degraded ↔ failed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import Custom, example, wait_for
from tests.integration.test_operator import _finish_pods, _jobs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHECKER = REPO / "tests" / "gitops" / "checker"
GITOPS_DOC = REPO / "docs" / "gitops.md"
AGREE = {"Healthy": "current", "Progressing": "inProgress", "Degraded": "failed"}


@pytest.fixture(scope="module")
def checker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checker built once per source version, cached beside the other Go tools."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("Go is needed to build tests/gitops/checker (cel-go and gopher-lua)")
    digest = hashlib.sha256(b"".join((CHECKER / f).read_bytes() for f in ("go.mod", "go.sum", "main.go")))
    binary = Path.home() / ".cache" / "kubemam" / "gitops-health" / digest.hexdigest()[:16] / "gitops-health"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_suffix(".partial")
        subprocess.run([go, "build", "-trimpath", "-o", str(partial), "."], cwd=CHECKER, check=True, timeout=900,
                       env={**__import__("os").environ, "GOFLAGS": "-mod=readonly", "GOSUMDB": "off"})
        partial.rename(binary)
    return binary


def _documented() -> tuple[str, dict[str, dict[str, str]]]:
    """The Argo CD script and the Flux expressions per kind, as docs/gitops.md gives them."""
    blocks = re.findall(r"```yaml\n(.*?)```", GITOPS_DOC.read_text(), flags=re.S)
    argocd = next(yaml.safe_load(b) for b in blocks if "argocd-cm" in b)
    scripts = {k: v for k, v in argocd["data"].items() if k.startswith("resource.customizations.health.kubemam.io_")}
    assert len(scripts) == 4 and len(set(scripts.values())) == 1, "one script for the four kinds"
    flux = next(yaml.safe_load(b) for b in blocks if "healthCheckExprs" in b)
    exprs = {e["kind"]: {"current": e["current"], "failed": e.get("failed", "false")}
             for e in flux["spec"]["healthCheckExprs"]}
    assert set(exprs) == {"MediaAsset", "TranscodeLadder", "RightsWindow", "ArchivePolicy"}
    return next(iter(scripts.values())), exprs


def _judge(checker: Path, script: Path, exprs: dict[str, dict[str, str]], body: dict[str, Any]) -> tuple[str, str]:
    kind = exprs[body["kind"]]
    result = subprocess.run([str(checker), "-lua", str(script), "-current", kind["current"], "-failed", kind["failed"]],
                            input=json.dumps(body), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    return report["argo"]["status"], report["flux"]


def _ready_reason(custom: Custom, plural: str, name: str, reason: str) -> dict[str, Any] | None:
    body = custom.get(plural, name)
    ready = next((c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)
    return body if ready is not None and ready["reason"] == reason else None


def _asset(name: str, **spec: Any) -> dict[str, Any]:
    body = example("mediaasset.yaml")
    body["metadata"] = {"name": name}
    body["spec"].pop("ladderRef")
    body["spec"].pop("archivePolicyRef")
    body["spec"].update(spec)
    return body


INGEST_RESULT = json.dumps({"technical": {"container": "mov", "durationSeconds": 30.0, "sha256": "ab" * 32,
                                          "sizeBytes": 1000, "video": {"codec": "h264", "width": 1920,
                                                                       "height": 1080, "frameRate": "25/1"}},
                            "qc": {"verdict": "Passed", "checkedAt": "2026-11-30T00:00:00Z"}})


def test_argo_cd_and_flux_agree_on_every_phase(checker: Path, operator: Path, api_client: Any, namespace: str,
                                               tmp_path: Path) -> None:
    lua, exprs = _documented()
    script = tmp_path / "health.lua"
    script.write_text(lua)
    custom = Custom(api_client, namespace)
    seen: dict[str, tuple[str, str]] = {}

    def judge(label: str, body: dict[str, Any], expected: str) -> None:
        seen[label] = _judge(checker, script, exprs, body)
        assert seen[label] == (expected, AGREE[expected]), (label, seen[label], body.get("status"))

    # A new object, before the operator's first status write.
    judge("asset created", custom.create("mediaassets", _asset("ready")), "Progressing")
    # Pending until the Job controller counts its pod active, Running after: which one a reconcile catches
    # depends on when the Job reaches the operator's index, and both are progressing.
    judge("asset ingest under way", wait_for(lambda: _ready_reason(custom, "mediaassets", "ready", "IngestPending")
                                             or _ready_reason(custom, "mediaassets", "ready", "IngestRunning"),
                                             what="IngestPending or IngestRunning"), "Progressing")
    job = wait_for(lambda: _jobs(api_client, namespace, "ready"), what="the ingest Job")[0].metadata.name
    _finish_pods(api_client, namespace, job, 0, INGEST_RESULT)
    ready = wait_for(lambda: _ready_reason(custom, "mediaassets", "ready", "AllStepsSucceeded"), timeout=60,
                     what="Ready")
    judge("asset ready", ready, "Healthy")
    # An edit the operator has not judged yet: the status is older than the spec.
    stale = copy.deepcopy(ready)
    stale["metadata"]["generation"] = int(ready["metadata"]["generation"]) + 1
    judge("asset stale", stale, "Progressing")

    custom.create("mediaassets", _asset("broken"))
    job = wait_for(lambda: _jobs(api_client, namespace, "broken"), what="the second ingest Job")[0].metadata.name
    _finish_pods(api_client, namespace, job, 2, json.dumps({"error": "ingest: the master is not media"}))
    judge("asset failed", wait_for(lambda: _ready_reason(custom, "mediaassets", "broken", "IngestFailed"), timeout=60,
                                   what="IngestFailed"), "Degraded")
    custom.create("mediaassets", _asset("waiting", ladderRef={"name": "not-applied-yet"}))
    judge("asset waits for its ladder", wait_for(lambda: _ready_reason(custom, "mediaassets", "waiting",
                                                                       "LadderNotFound"), what="LadderNotFound"),
          "Progressing")
    custom.create("mediaassets", _asset("ftp", source={"uri": "ftp://archive.example/ep1.mov"}))
    judge("asset refused", wait_for(lambda: _ready_reason(custom, "mediaassets", "ftp", "UnsupportedSource"),
                                    what="UnsupportedSource"), "Degraded")

    custom.create("transcodeladders", example("transcodeladder.yaml"))
    name = example("transcodeladder.yaml")["metadata"]["name"]
    judge("ladder valid", wait_for(lambda: _ready_reason(custom, "transcodeladders", name, "Valid"),
                                   what="ladder Valid"), "Healthy")
    misaligned = example("transcodeladder.yaml")
    misaligned["metadata"]["name"] = "misaligned"
    misaligned["spec"]["chunking"] = {"chunkSeconds": 7}
    custom.create("transcodeladders", misaligned)
    judge("ladder invalid", wait_for(lambda: _ready_reason(custom, "transcodeladders", "misaligned",
                                                           "ChunkNotSegmentAligned"), what="ChunkNotSegmentAligned"),
          "Degraded")

    window = example("rightswindow.yaml")
    window["spec"]["assets"] = {"names": ["no-such-asset"]}
    custom.create("rightswindows", window)
    judge("window matches nothing yet", wait_for(lambda: _ready_reason(custom, "rightswindows",
                                                                       window["metadata"]["name"], "NoAssetsMatched"),
                                                 what="NoAssetsMatched"), "Progressing")
    custom.patch("rightswindows", window["metadata"]["name"], {"spec": {"assets": {"names": ["ready"]}}})
    judge("window scheduled", wait_for(lambda: _ready_reason(custom, "rightswindows", window["metadata"]["name"],
                                                             "Scheduled"), what="window Scheduled"), "Healthy")

    custom.create("archivepolicies", example("archivepolicy.yaml"))
    policy = example("archivepolicy.yaml")["metadata"]["name"]
    judge("policy valid", wait_for(lambda: _ready_reason(custom, "archivepolicies", policy, "Valid"),
                                   what="policy Valid"), "Healthy")
    looping = example("archivepolicy.yaml")
    looping["metadata"]["name"] = "looping"
    looping["spec"]["tiers"][1]["transition"]["afterDays"] = 0.0
    custom.create("archivepolicies", looping)
    judge("policy invalid", wait_for(lambda: _ready_reason(custom, "archivepolicies", "looping", "InvalidTierOrder"),
                                     what="InvalidTierOrder"), "Degraded")
    assert len(seen) == 13
