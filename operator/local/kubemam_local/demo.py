"""`kubemam demo`: the local cluster, the examples applied in dependency order, the asset followed
step by step (ingest → transcode → package → archive) until Ready, and the `kubemam status` and
`kubemam describe ma` views at the end. Exits 1 when an asset does not reach Ready.

Order: what assets refer to (ladders, archive policies, the distribution targets ConfigMap, rights
windows) is applied first and waited for — until the operator has reconciled it — and the assets
last. `kubectl apply -f examples/` in file order would create the asset before its ladder; the
asset then says `LadderNotFound` until the ladder arrives, which is a wait, not an end: only
Ready=True, phase Failed or the deadline end the watch.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from kubemam.media.sample import make_sample, sample_captions
from kubemam.plan.jobs import LABEL_ASSET, LABEL_STEP, MANAGED_SELECTOR, asset_label
from kubemam.status_view import progress_bar, span
from kubemam.storage.s3 import make_client
from kubemam.storage.uri import S3Uri
from kubemam_local import cluster

DEMO_NAMESPACE = "kubemam-demo"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
# The order things are applied in: what others refer to first, the assets last. Kinds not named here
# (Secrets, other ConfigMaps) go with the ConfigMaps.
APPLY_ORDER = ("TranscodeLadder", "ArchivePolicy", "ConfigMap", "RightsWindow", "MediaAsset")
# The kinds the operator writes a status on: applied ones are waited for until it has reconciled them.
RECONCILED = {"TranscodeLadder": "transcodeladders", "ArchivePolicy": "archivepolicies",
              "RightsWindow": "rightswindows"}
SETTLE_SECONDS = 90.0  # how long to wait for the operator to reconcile a ladder, policy or window
POLL_SECONDS = 1.0
PROGRESS_STEP = 10  # a progress line every this many percent


def _kubectl(state: dict[str, Any], *args: str, check: bool = True) -> str:
    result = subprocess.run([f"{state['binDir']}/kubectl", f"--kubeconfig={state['kubeconfig']}", *args],
                            capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _say(text: str) -> None:
    print(text, flush=True)


def s3_client(state: dict[str, Any]) -> Any:
    """An S3 client for the local MinIO, with the credentials read from the cluster's Secret."""
    secret = json.loads(_kubectl(state, "get", "secret", state["s3CredentialsSecret"], "-n", DEMO_NAMESPACE,
                                 "-o", "json"))["data"]
    return make_client(state["s3Endpoint"], base64.b64decode(secret["AWS_ACCESS_KEY_ID"]).decode(),
                       base64.b64decode(secret["AWS_SECRET_ACCESS_KEY"]).decode())


def documents(examples: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every manifest in the directory (or the one file), with the file it came from."""
    paths = sorted(examples.glob("*.yaml")) + sorted(examples.glob("*.yml")) if examples.is_dir() else [examples]
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind"):
                yield path, doc


def upload_sources(state: dict[str, Any], examples: Path, work: Path, **sample: int | str) -> None:
    """Make the master every example MediaAsset names and upload it where its source.uri points."""
    s3 = s3_client(state)
    for _, doc in documents(examples):
        if doc.get("kind") != "MediaAsset":
            continue
        target = S3Uri.parse(doc["spec"]["source"]["uri"])
        master = make_sample(work / Path(target.key).name, **sample)
        s3.upload_file(str(master), target.bucket, target.key)
        _say(f"   uploaded {master.stat().st_size} bytes to {target}")
        for caption in doc["spec"].get("captions") or []:
            where = S3Uri.parse(caption["uri"])
            text = sample_captions(caption["format"], caption["language"], int(sample.get("seconds", 30)))
            s3.put_object(Bucket=where.bucket, Key=where.key, Body=text.encode())
            _say(f"   uploaded {caption['format']} captions ({caption['language']}) to {where}")


def apply_stages(examples: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    """The manifests grouped by APPLY_ORDER: [(kind, documents)], in the order to apply them."""
    stages: dict[str, list[dict[str, Any]]] = {kind: [] for kind in APPLY_ORDER}
    for _, doc in documents(examples):
        kind = str(doc["kind"])
        stages[kind if kind in stages else "ConfigMap"].append(doc)
    return [(kind, docs) for kind, docs in stages.items() if docs]


def _apply(state: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    # As JSON, a List: nothing of YAML 1.1 (a bare NO, a date) can change on the way.
    with tempfile.NamedTemporaryFile("w", suffix=".json") as manifest:
        json.dump({"apiVersion": "v1", "kind": "List", "items": docs}, manifest)
        manifest.flush()
        for line in _kubectl(state, "apply", "-n", DEMO_NAMESPACE, "-f", manifest.name).splitlines():
            _say(f"   {line}")


def _condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


def _ready(body: dict[str, Any]) -> dict[str, Any] | None:
    return _condition(body, "Ready")


def _reconciled(body: dict[str, Any]) -> bool:
    status = body.get("status") or {}
    observed = status.get("observedGeneration")
    return _ready(body) is not None and (observed is None or observed >= body["metadata"].get("generation", 0))


def _wait_reconciled(state: dict[str, Any], kind: str, docs: list[dict[str, Any]], timeout: float) -> None:
    """Until the operator has written each object's Ready condition; then one line per object."""
    plural = RECONCILED[kind]
    names = [d["metadata"]["name"] for d in docs]
    deadline = time.monotonic() + timeout
    bodies: dict[str, dict[str, Any]] = {}
    while True:
        items = json.loads(_kubectl(state, "get", plural, "-n", DEMO_NAMESPACE, "-o", "json"))["items"]
        bodies = {i["metadata"]["name"]: i for i in items if i["metadata"]["name"] in names}
        if all(n in bodies and _reconciled(bodies[n]) for n in names) or time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)
    for name in names:
        ready = _ready(bodies.get(name) or {})
        if ready is None:
            _say(f"   {kind} {name}: not reconciled after {timeout:.0f}s (the operator's log: "
                 f"{state['logs']}/operator.log)")
            continue
        phase = (bodies[name].get("status") or {}).get("phase")
        message = f" — {ready['message']}" if ready.get("message") and ready["status"] != "True" else ""
        _say(f"   {kind} {name}: Ready={ready['status']} ({ready.get('reason', '')})"
             f"{f' phase {phase}' if phase else ''}{message}")


# --- following an asset -----------------------------------------------------------------------------------


def job_state(job: dict[str, Any]) -> str:
    """A live Job's state as the asset's status.jobs names them (Suspended while Kueue holds it)."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return "Succeeded" if condition["type"] == "Complete" else "Failed"
    if (job.get("spec") or {}).get("suspend"):
        return "Suspended"
    return "Running" if status.get("active") else "Pending"


def look(asset: dict[str, Any], jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """One look at an asset: its body and its step Jobs by name → (step, state, message). The live Jobs
    win over status.jobs, which drops a Job once its outcome is in (a finished transcode, a superseded
    archive run) and lags behind it; a Job since deleted keeps its recorded state."""
    steps: dict[str, tuple[str, str, str]] = {}
    for record in (asset.get("status") or {}).get("jobs") or []:
        steps[str(record.get("name"))] = (str(record.get("step") or "?"), str(record.get("state") or "?"),
                                          " ".join(str(record.get("message") or "").split()))
    uid = (asset.get("metadata") or {}).get("uid")
    for job in sorted(jobs, key=lambda j: str(j["metadata"].get("creationTimestamp") or "")):
        if uid and not any(o.get("uid") == uid for o in job["metadata"].get("ownerReferences") or []):
            continue
        name = job["metadata"]["name"]
        step = (job["metadata"].get("labels") or {}).get(LABEL_STEP) or steps.get(name, ("?",))[0]
        state = job_state(job)
        message = steps[name][2] if name in steps and steps[name][1] == state else ""
        steps[name] = (step, state, message)
    return {"asset": asset, "jobs": steps}


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What changed between two looks at an asset, one line each: phase, each step Job's state,
    progress (every PROGRESS_STEP percent), the Ready condition."""
    lines = []
    old_asset, new_asset = before.get("asset") or {}, after.get("asset") or {}
    old, new = old_asset.get("status") or {}, new_asset.get("status") or {}
    if old.get("phase") != new.get("phase") and new.get("phase"):
        lines.append(f"phase {old.get('phase') or '-'} → {new['phase']}")
    old_jobs = before.get("jobs") or {}
    for name, (step, state, message) in (after.get("jobs") or {}).items():
        if old_jobs.get(name, (None, None))[1] != state:
            detail = f": {message[:160]}" if message and state == "Failed" else ""
            lines.append(f"{step:<10} Job {name} {state}{detail}")
    progress, old_progress = new.get("progress") or {}, old.get("progress") or {}
    if progress.get("step") and (progress.get("step"), int(progress.get("percent") or 0) // PROGRESS_STEP) != (
            old_progress.get("step"), int(old_progress.get("percent") or 0) // PROGRESS_STEP):
        fps = f" {progress['fps']:.0f} fps" if progress.get("fps") else ""
        eta = f" ETA {span(progress['etaSeconds'])}" if progress.get("etaSeconds") else ""
        lines.append(f"{progress['step']:<10} {progress_bar(progress.get('percent'))}{fps}{eta}")
    gate, old_gate = _condition(new_asset, "Publishable"), _condition(old_asset, "Publishable")
    if gate is not None and (old_gate is None or (old_gate.get("status"), old_gate.get("reason")) != (
            gate.get("status"), gate.get("reason"))):
        lines.append(f"Publishable={gate.get('status')} ({gate.get('reason', '')}) — {gate.get('message', '')}")
    ready, old_ready = _ready(new_asset), _ready(old_asset)
    if ready is not None and (old_ready is None or (old_ready.get("status"), old_ready.get("reason")) != (
            ready.get("status"), ready.get("reason"))):
        message = f" — {ready['message']}" if ready.get("message") and ready.get("status") != "True" else ""
        lines.append(f"Ready={ready.get('status')} ({ready.get('reason', '')}){message}")
    return lines


def ended(asset: dict[str, Any]) -> bool:
    """Ready=True or phase Failed. A Ready=False that waits (LadderNotFound while the ladder is on its
    way, a step running) is not an end."""
    ready = _ready(asset)
    return (ready is not None and ready.get("status") == "True") or (asset.get("status") or {}).get("phase") == "Failed"


def follow(state: dict[str, Any], names: list[str], watch_seconds: float) -> dict[str, dict[str, Any]]:
    """Print each asset's steps as they go until every one has ended or the deadline passes; the last
    look at each."""
    last: dict[str, dict[str, Any]] = {name: {} for name in names}
    deadline = time.monotonic() + watch_seconds
    width = max(len(n) for n in names)
    selector = ",".join(f"{k}={v}" for k, v in MANAGED_SELECTOR.items())
    while True:
        items = json.loads(_kubectl(state, "get", "mediaassets", "-n", DEMO_NAMESPACE, "-o", "json"))["items"]
        jobs = json.loads(_kubectl(state, "get", "jobs", "-n", DEMO_NAMESPACE, "-l", selector, "-o", "json"))["items"]
        current = {i["metadata"]["name"]: i for i in items if i["metadata"]["name"] in last}
        for name in names:
            mine = [j for j in jobs if (j["metadata"].get("labels") or {}).get(LABEL_ASSET) == asset_label(name)]
            now = look(current.get(name) or {}, mine)
            for line in changes(last[name], now):
                _say(f"   {time.strftime('%H:%M:%S')} {name:<{width}}  {line}")
            last[name] = now
        if all(ended(last[n]["asset"]) for n in names):
            return {n: last[n]["asset"] for n in names}
        if time.monotonic() > deadline:
            _say(f"   {time.strftime('%H:%M:%S')} stopped watching after {watch_seconds:.0f}s")
            return {n: last[n]["asset"] for n in names}
        time.sleep(POLL_SECONDS)


def _view(state: dict[str, Any], *args: str) -> None:
    """A `kubemam` view as people run it, against the local cluster."""
    _say(f"== kubemam {' '.join(args)}")
    env = {**os.environ, "KUBECONFIG": state["kubeconfig"]}
    result = subprocess.run([sys.executable, "-m", "kubemam", *args], capture_output=True, text=True, env=env,
                            timeout=120)
    sys.stdout.write(result.stdout)
    if result.returncode != 0:
        sys.stdout.write(result.stderr)
    sys.stdout.flush()


def run(examples: Path = EXAMPLES, watch_seconds: float = 900.0, state_dir: Path | None = None,
        sample: dict[str, int | str] | None = None, node: str = "process") -> int:
    """The demo; 0 when every example asset reached Ready. `sample` overrides the master's make_sample
    arguments (default 30 s of 1080p25). node "kubelet": on the real node, the operator and every step in the
    built images (kubemam_local/kubelet.py)."""
    sample = dict(sample or {})
    directory = state_dir or cluster.state_dir()
    if node == "kubelet":
        _say("== starting the local cluster (control plane, scheduler, kubelet with containerd, MinIO, the chart)")
    else:
        _say("== starting the local cluster (control plane, scheduler, process node, MinIO, operator)")
    state = cluster.up(directory, node=node)
    _say(f"   Kubernetes {state['version']} at {state['server']}, S3 at {state['s3Endpoint']}, state in {directory}")
    seconds, width, height = sample.get("seconds", 30), sample.get("width", 1920), sample.get("height", 1080)
    _say(f"== generating a {seconds} s {width}x{height} 25 fps stereo master "
         "(timecode 10:00:00:00, black, a freeze, a loud passage)")
    with tempfile.TemporaryDirectory() as work:
        upload_sources(state, examples, Path(work), **sample)

    stages = apply_stages(examples)
    assets: list[str] = []
    for kind, docs in stages:
        _say(f"== applying {len(docs)} {kind}{'s' if len(docs) != 1 else ''} to namespace {DEMO_NAMESPACE}")
        _apply(state, docs)
        if kind in RECONCILED:
            _wait_reconciled(state, kind, docs, SETTLE_SECONDS)
        if kind == "MediaAsset":
            assets = [d["metadata"]["name"] for d in docs]
    if not assets:
        _say(f"no MediaAsset in {examples}: nothing to follow")
        return 1

    _say("== following the asset through ingest → transcode → package → archive")
    last = follow(state, assets, watch_seconds)

    _view(state, "status", "-n", DEMO_NAMESPACE)
    for name in assets:
        _view(state, "describe", "ma", name, "-n", DEMO_NAMESPACE)

    not_ready = [n for n in assets if not (ended(last[n]) and (_ready(last[n]) or {}).get("status") == "True")]
    _say("")
    for name in not_ready:
        ready = _ready(last[name]) or {}
        _say(f"{name} did not reach Ready: {ready.get('reason', 'no Ready condition')} {ready.get('message', '')}"
             .rstrip())
        if state.get("nodeKind") == "kubelet":
            _say(f"   a step pod's output: kubectl logs -n {DEMO_NAMESPACE} POD; the operator's: "
                 f"kubectl logs -n {state['operator'].replace('/deployment/', ' deployment/')}")
        else:
            _say(f"   a step pod's output: kubemam local logs POD (pods: kubectl get pods -n {DEMO_NAMESPACE}); "
                 f"the operator's: {state['logs']}/operator.log")
    if not not_ready:
        _say(f"{', '.join(assets)} {'is' if len(assets) == 1 else 'are'} Ready.")
    _say("The cluster keeps running. To use it:")
    for line in cluster.env_lines(state):
        _say(f"  {line}")
    _say("Stop it with: make down   (or: kubemam local down)")
    return 1 if not_ready else 0
