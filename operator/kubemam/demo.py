"""`kubemam demo`: the local cluster, the examples applied, and the operator's work shown live."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from kubemam.local import cluster

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


def run(examples: Path = EXAMPLES, watch_seconds: float = 20.0) -> int:
    print("== starting the local cluster (control plane + operator)")
    state = cluster.up(cluster.state_dir())
    print(f"   Kubernetes {state['version']} at {state['server']}")
    _kubectl(state, "create", "namespace", DEMO_NAMESPACE, check=False)
    print(f"== applying {examples}/ to namespace {DEMO_NAMESPACE}")
    print(_kubectl(state, "apply", "-n", DEMO_NAMESPACE, "-f", str(examples)).rstrip())

    print("== watching the MediaAsset")
    last = ""
    deadline = time.monotonic() + watch_seconds
    while time.monotonic() < deadline:
        assets = json.loads(_kubectl(state, "get", "mediaassets", "-n", DEMO_NAMESPACE, "-o", "json"))["items"]
        line = "; ".join(f"{a['metadata']['name']}: {_summary(a)}" for a in assets)
        if line != last:
            print(f"   {time.strftime('%H:%M:%S')} {line}")
            last = line
        time.sleep(1.0)

    print("== kubectl get ma,tl,rw,ap")
    print(_kubectl(state, "get", "ma,tl,rw,ap", "-n", DEMO_NAMESPACE, "-o", "wide").rstrip())
    print("== the Jobs the operator created")
    print(_kubectl(state, "get", "jobs,pods", "-n", DEMO_NAMESPACE, "-L", "kubemam.io/step").rstrip())
    if not json.loads(_kubectl(state, "get", "nodes", "-o", "json"))["items"]:
        print("   (this cluster has no node yet, so step pods wait in Pending: the Jobs are real, "
              "nothing runs them until a node joins)")
    print("== MediaAsset status")
    print(_kubectl(state, "get", "mediaasset", "coastal-s01e01", "-n", DEMO_NAMESPACE,
                   "-o", "jsonpath={.status}").rstrip())
    print()
    print("The cluster keeps running. To use it:")
    for line in cluster.env_lines(state):
        print(f"  {line}")
    print("Stop it with: make down   (or: kubemam local down)")
    return 0
