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
from kubemam.media.sample import make_sample
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
    return (f"phase={status.get('phase', '-')} progress={progress.get('percent', 0)}% "
            f"step={progress.get('step', '-')} {conditions}")


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


def _ingest_settled(asset: dict[str, Any]) -> bool:
    ingested = next((c for c in (asset.get("status") or {}).get("conditions") or [] if c["type"] == "Ingested"), None)
    return ingested is not None and ingested["status"] in ("True", "False")


def run(examples: Path = EXAMPLES, watch_seconds: float = 300.0) -> int:
    print("== starting the local cluster (control plane, scheduler, process node, MinIO, operator)")
    state = cluster.up(cluster.state_dir())
    print(f"   Kubernetes {state['version']} at {state['server']}, S3 at {state['s3Endpoint']}")
    print("== generating a 30 s 1080p25 stereo master (timecode 10:00:00:00, black, a freeze, a loud passage)")
    with tempfile.TemporaryDirectory() as work:
        upload_sources(state, examples, Path(work))
    print(f"== applying {examples}/ to namespace {DEMO_NAMESPACE}")
    print(_kubectl(state, "apply", "-n", DEMO_NAMESPACE, "-f", str(examples)).rstrip())

    print("== watching the MediaAsset until ingest is done")
    last = ""
    deadline = time.monotonic() + watch_seconds
    while time.monotonic() < deadline:
        assets = json.loads(_kubectl(state, "get", "mediaassets", "-n", DEMO_NAMESPACE, "-o", "json"))["items"]
        line = "; ".join(f"{a['metadata']['name']}: {_summary(a)}" for a in assets)
        if line != last:
            print(f"   {time.strftime('%H:%M:%S')} {line}")
            last = line
        if assets and all(_ingest_settled(a) for a in assets):
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
    print()
    print("The cluster keeps running. To use it:")
    for line in cluster.env_lines(state):
        print(f"  {line}")
    print("Stop it with: make down   (or: kubemam local down)")
    return 0
