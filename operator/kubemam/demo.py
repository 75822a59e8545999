"""`kubemam demo`: the local cluster, the examples applied, and the operator's work shown live."""

from __future__ import annotations

import base64
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from kubemam.local import cluster
from kubemam.media.sample import make_sample, sample_captions
from kubemam.storage.s3 import make_client
from kubemam.storage.uri import S3Uri

DEMO_NAMESPACE = "kubemam-demo"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _kubectl(state: dict[str, Any], *args: str, check: bool = True) -> str:
    result = subprocess.run([f"{state['binDir']}/kubectl", f"--kubeconfig={state['kubeconfig']}", *args],
                            capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _summary(asset: dict[str, Any]) -> str:
    status = asset.get("status") or {}
    conditions = ", ".join(f"{c['type']}={c['status']}({c['reason']})" for c in status.get("conditions") or [])
    progress = status.get("progress") or {}
    speed = f" {progress['fps']:.0f}fps" if progress.get("fps") else ""
    eta = f" eta {progress['etaSeconds']}s" if progress.get("etaSeconds") is not None else ""
    return (f"phase={status.get('phase', '-')} step={progress.get('step', '-')} "
            f"progress={progress.get('percent', 0)}%{speed}{eta} {conditions}")


def s3_client(state: dict[str, Any]) -> Any:
    """An S3 client for the local MinIO, with the credentials read from the cluster's Secret."""
    secret = json.loads(_kubectl(state, "get", "secret", state["s3CredentialsSecret"], "-n", DEMO_NAMESPACE,
                                 "-o", "json"))["data"]
    return make_client(state["s3Endpoint"], base64.b64decode(secret["AWS_ACCESS_KEY_ID"]).decode(),
                       base64.b64decode(secret["AWS_SECRET_ACCESS_KEY"]).decode())


def upload_sources(state: dict[str, Any], examples: Path, work: Path, **sample: int | str) -> None:
    """Make the master every example MediaAsset names and upload it where its source.uri points."""
    s3 = s3_client(state)
    for path in sorted(examples.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc.get("kind") != "MediaAsset":
            continue
        target = S3Uri.parse(doc["spec"]["source"]["uri"])
        master = make_sample(work / Path(target.key).name, **sample)
        s3.upload_file(str(master), target.bucket, target.key)
        print(f"   uploaded {master.stat().st_size} bytes to {target}")
        for caption in doc["spec"].get("captions") or []:
            where = S3Uri.parse(caption["uri"])
            text = sample_captions(caption["format"], caption["language"], int(sample.get("seconds", 30)))
            s3.put_object(Bucket=where.bucket, Key=where.key, Body=text.encode())
            print(f"   uploaded {caption['format']} captions ({caption['language']}) to {where}")


def _settled(asset: dict[str, Any]) -> bool:
    """Every step has ended: the asset is Ready, Failed, or waits on something outside it."""
    status = asset.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
    return status.get("phase") in ("Ready", "Failed") or (
        ready is not None and ready["reason"] in ("LadderNotFound", "LadderInvalid", "ArchivePolicyNotFound"))


def run(examples: Path = EXAMPLES, watch_seconds: float = 900.0) -> int:
    print("== starting the local cluster (control plane, scheduler, process node, MinIO, operator)")
    state = cluster.up(cluster.state_dir())
    print(f"   Kubernetes {state['version']} at {state['server']}, S3 at {state['s3Endpoint']}")
    print("== generating a 30 s 1080p25 stereo master (timecode 10:00:00:00, black, a freeze, a loud passage)")
    with tempfile.TemporaryDirectory() as work:
        upload_sources(state, examples, Path(work))
    print(f"== applying {examples}/ to namespace {DEMO_NAMESPACE}")
    print(_kubectl(state, "apply", "-n", DEMO_NAMESPACE, "-f", str(examples)).rstrip())

    print("== watching the MediaAsset through ingest, transcode and packaging")
    last = ""
    deadline = time.monotonic() + watch_seconds
    while time.monotonic() < deadline:
        assets = json.loads(_kubectl(state, "get", "mediaassets", "-n", DEMO_NAMESPACE, "-o", "json"))["items"]
        line = "; ".join(f"{a['metadata']['name']}: {_summary(a)}" for a in assets)
        if line != last:
            print(f"   {time.strftime('%H:%M:%S')} {line}")
            last = line
        if assets and all(_settled(a) for a in assets):
            break
        time.sleep(1.0)

    print("== kubectl get ma,tl,rw,ap")
    print(_kubectl(state, "get", "ma,tl,rw,ap", "-n", DEMO_NAMESPACE, "-o", "wide").rstrip())
    print("== the Jobs the operator created")
    print(_kubectl(state, "get", "jobs,pods", "-n", DEMO_NAMESPACE, "-L", "kubemam.io/step").rstrip())
    print("== MediaAsset status")
    status = json.loads(_kubectl(state, "get", "mediaasset", "coastal-s01e01", "-n", DEMO_NAMESPACE,
                                 "-o", "json")).get("status") or {}
    print(yaml.safe_dump(status, sort_keys=False).rstrip())
    renditions = status.get("renditions") or []
    if renditions:
        print("== renditions in MinIO")
        for r in renditions:
            size = f"{r.get('width')}x{r.get('height')} " if r.get("kind") == "video" else ""
            kbps = (r.get("bitrate") or 0) // 1000
            print(f"   {r['name']:<12} {r.get('codec', ''):<5} {size}{kbps} kb/s  {r['uri']}")
    packages = status.get("packages") or []
    if packages:
        print("== packages (DRM key IDs only; the keys stay in the asset's Secret)")
        for p in packages:
            drm = f"{p.get('scheme')} {','.join(p.get('drmSystems') or [])} KIDs {', '.join(p.get('keyIds') or [])}" \
                if p.get("drmSystems") else "clear"
            print(f"   {p['format']:<5} {p['manifestUri']}  [{drm}]")
    print()
    print("The cluster keeps running. To use it:")
    for line in cluster.env_lines(state):
        print(f"  {line}")
    print("Stop it with: make down   (or: kubemam local down)")
    return 0
