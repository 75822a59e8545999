"""Catalogue-scale benchmark on the local cluster: N MediaAssets created at once, only the operator measured.

A ResourceQuota of zero pods in the namespace refuses every worker pod, so the step Jobs exist but never
run: what is measured is the operator (and the API server it talks to), not ffmpeg. It prints

  - asset -> Job p50 / p99: from the moment an asset's create call returned to the moment a watch on
    Jobs saw the asset's first Job (goal at 1,000: p99 <= 10 s),
  - the time from the first create to the last Job (goal at 10,000: <= 120 s),
  - the operator's peak RSS (VmHWM; goal <= 256 MiB at 1,000) against the chart's memory limit,
  - the operator's CPU while it settles (a window of --quiet-seconds right after the last Job), then its CPU
    and the API server's requests per second over a quiet window of the same length after that
    (goal <= 0.05 core at 1,000): all non-watch requests, and those of the kinds only the operator
    reads or writes (kubemam kinds, Secrets, Events, pod lists and logs, Job reads and edits),
  - the time to delete every asset (until the last one is gone, finalizers included).

Every asset names the examples' ladder and archive policy, so a reconcile does what a real one does.
The figures are noisy on a shared machine: compare runs made on the same machine one after another.

Usage: .venv/bin/python bench/scale.py [--assets 1000] [--quiet-seconds 60] [--strict]
       .venv/bin/python bench/scale.py --smoke     (20 assets, a 10 s quiet window: checks it runs)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kubemam.api.common import GROUP, VERSION
from kubemam.api.kinds import MEDIA_ASSET
from kubemam.plan.jobs import MANAGED_SELECTOR
from kubemam_local import cluster

NAMESPACE = "default"  # the local cluster provisions its S3 credentials Secret here
ROOT = Path(__file__).resolve().parent.parent
CHART_VALUES = ROOT / "charts" / "kubemam" / "values.yaml"
MIB = 1024 * 1024
# Kinds whose non-watch requests come from the operator alone on the local cluster (the controller-manager
# and the process node read Jobs and pods through informers and write Job status, pods and leases).
# Events are left out: with pods refused, the Job controller posts a FailedCreate Event per try.
OPERATOR_RESOURCES = {"mediaassets", "transcodeladders", "rightswindows", "archivepolicies", "secrets",
                      "configmaps"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


def chart_memory_limit() -> int | None:
    limits = ((yaml.safe_load(CHART_VALUES.read_text()) or {}).get("resources") or {}).get("limits") or {}
    memory = str(limits.get("memory") or "")
    units = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB}
    for suffix, factor in units.items():
        if memory.endswith(suffix):
            return int(float(memory[: -len(suffix)]) * factor)
    return int(memory) if memory.isdigit() else None


class Process:
    """The operator's figures, read from /proc (it runs as a process of the local cluster's supervisor)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tick = 100.0  # USER_HZ; Linux reports CPU time in clock ticks of 1/100 s

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime

    def memory(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {key} for pid {self.pid}")


def cluster_process(program: str, directory: str) -> Process | None:
    """A process of this local cluster (its arguments name the cluster's directory) by its program's file
    name (kube-apiserver, etcd): the machine's two cores are shared, and the API server's share bounds how
    fast the operator's calls are answered."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if Path(argv[0]).name == program and any(directory in arg for arg in argv[1:]):
            return Process(int(entry.name))
    return None


def request_counts(api: client.ApiClient) -> Counter[tuple[str, str, str]]:
    """apiserver_request_total summed by (verb, resource, subresource), watches left out."""
    response = api.call_api("/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False,
                            _request_timeout=(5, 30))
    counts: Counter[tuple[str, str, str]] = Counter()
    raw = response[0] if isinstance(response, tuple) else response  # the client's return shape varies by version
    for line in raw.data.decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, value = line[len("apiserver_request_total{"):].rsplit("} ", 1)
        labels = dict(part.split("=", 1) for part in labels_text.split(",") if "=" in part)
        labels = {k: v.strip('"') for k, v in labels.items()}
        if labels.get("verb") == "WATCH":
            continue
        counts[(labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))] += int(
            float(value))
    return counts


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def operator_gc_seconds() -> float | None:
    """The operator's time in Python's garbage collector so far (its kubemam_operator_gc_seconds, every
    generation), from its metrics port; None when it cannot be read."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{os.environ['KUBEMAM_METRICS_PORT']}/metrics",
                                    timeout=10) as answer:
            text = answer.read().decode()
    except (OSError, KeyError):
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("kubemam_operator_gc_seconds_total{"))


def operator_requests(counts: Counter[tuple[str, str, str]]) -> int:
    total = 0
    for (verb, resource, subresource), n in counts.items():
        if resource in OPERATOR_RESOURCES \
                or (resource == "pods" and (verb == "LIST" or subresource == "log")) \
                or (resource == "jobs" and subresource != "status" and verb in ("GET", "LIST", "POST", "PATCH",
                                                                                 "DELETE")):
            total += n
    return total


class JobWatch(threading.Thread):
    """Records when each asset's first Job is seen: a watch on the namespace's kubemam Jobs, read as raw JSON
    (the client's model deserialisation is slow enough to lag behind 1,000 Jobs' events on a busy machine)."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.first_seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def run(self) -> None:
        selector = ",".join(f"{k}={v}" for k, v in MANAGED_SELECTOR.items())
        version = ""
        while not self.stopping.is_set():
            query = [("watch", "true"), ("labelSelector", selector), ("timeoutSeconds", "30"),
                     ("allowWatchBookmarks", "true")] + ([("resourceVersion", version)] if version else [])
            try:
                response = self.api.call_api(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", "GET",
                                             query_params=query, auth_settings=["BearerToken"],
                                             _preload_content=False, _request_timeout=(5, 60))
                raw = response[0] if isinstance(response, tuple) else response
                for line in _lines(raw):
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        version = ""  # expired: a fresh listing; first-seen times already recorded stay
                        break
                    now = time.monotonic()
                    meta = obj.get("metadata") or {}
                    version = meta.get("resourceVersion") or version
                    for owner in meta.get("ownerReferences") or []:
                        if owner.get("kind") == MEDIA_ASSET.kind:
                            with self.lock:
                                self.first_seen.setdefault(owner["name"], now)
                    if self.stopping.is_set():
                        return
            except Exception:  # noqa: BLE001 - a dropped watch is re-established
                time.sleep(0.5)

    def count(self, names: set[str]) -> int:
        with self.lock:
            return len(names & self.first_seen.keys())


def _lines(response: Any) -> Iterator[bytes]:
    """The newline-delimited events of a watch response."""
    buffer = b""
    for chunk in response.stream(65536, decode_content=True):
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from (line for line in complete if line.strip())


def apply_examples(custom: client.CustomObjectsApi) -> None:
    for file_name, plural in (("transcodeladder.yaml", "transcodeladders"), ("archivepolicy.yaml", "archivepolicies")):
        body = yaml.safe_load((ROOT / "examples" / file_name).read_text())
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, body)
        except ApiException as err:
            if err.status != 409:
                raise


def asset_body(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": MEDIA_ASSET.kind, "metadata": {"name": name},
            "spec": {"source": {"uri": f"s3://kubemam-library/incoming/{name}.mov"},
                     "metadata": {"title": name}, "ladderRef": {"name": "ott-standard"},
                     "archivePolicyRef": {"name": "library-321"}}}


def run(state: dict[str, Any], count: int, quiet_seconds: float, job_timeout: float, strict: bool) -> int:
    api = config.new_client_from_config(state["kubeconfig"])
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    operator = Process(int(state["operatorPid"]))
    core.create_namespaced_resource_quota(NAMESPACE, {"metadata": {"name": "no-worker-pods"},
                                                      "spec": {"hard": {"pods": "0"}}})
    apply_examples(custom)
    names = [f"scale-{n:05d}" for n in range(count)]
    wanted = set(names)
    jobs = JobWatch(api)
    jobs.start()
    time.sleep(1.0)  # the watch is listening before the first asset exists
    created_at: dict[str, float] = {}

    def create(name: str) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, MEDIA_ASSET.plural, asset_body(name),
                                               _request_timeout=(5, 60))
        created_at[name] = time.monotonic()

    rss_before = operator.memory("VmRSS")
    apiserver, etcd, controllers = (cluster_process(program, state["logs"])
                                    for program in ("kube-apiserver", "etcd", "kube-controller-manager"))
    client_process = Process(os.getpid())  # this benchmark's own creates and Job watch share the cores too
    sharing = [(label, p) for label, p in (("API server", apiserver), ("etcd", etcd),
                                           ("controller-manager", controllers), ("this client", client_process))
               if p is not None]
    others_start = {p.pid: p.cpu_seconds() for _, p in sharing}
    cpu_start, requests_start, gc_start = operator.cpu_seconds(), request_counts(api), operator_gc_seconds()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(create, names))
    created_in = time.monotonic() - started
    print(f"{count} MediaAssets created in {created_in:.1f} s (16 client threads); operator RSS before "
          f"{rss_before / MIB:.0f} MiB")
    deadline = started + job_timeout
    while jobs.count(wanted) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    seen = jobs.count(wanted)
    if seen < count:
        print(f"only {seen}/{count} assets had a Job after {job_timeout:.0f} s")
        return 1
    with jobs.lock:
        latencies = [jobs.first_seen[name] - created_at[name] for name in names]
        last_job = max(jobs.first_seen[name] for name in names) - started
    jobs.stopping.set()
    burst_seconds = time.monotonic() - started
    burst_cpu_seconds, gc_end = operator.cpu_seconds() - cpu_start, operator_gc_seconds()
    burst_cpu = burst_cpu_seconds / burst_seconds
    cluster_cpu = ", ".join(f"{label} {(p.cpu_seconds() - others_start[p.pid]) / burst_seconds:.2f} core"
                            for label, p in sharing)
    burst = request_counts(api) - requests_start
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)

    # First a window of the same length while the operator works off what the burst left (the status writes
    # after each Job, the Job controller's refused pods coming back as Job events), then the quiet one.
    cpu_s, t_s = operator.cpu_seconds(), time.monotonic()
    time.sleep(quiet_seconds)
    cpu0, requests0, t0 = operator.cpu_seconds(), request_counts(api), time.monotonic()
    settling = (cpu0 - cpu_s) / (t0 - t_s)
    time.sleep(quiet_seconds)
    cpu1, requests1, t1 = operator.cpu_seconds(), request_counts(api), time.monotonic()
    window = t1 - t0
    delta = requests1 - requests0
    cpu = (cpu1 - cpu0) / window
    all_rps, operator_rps = sum(delta.values()) / window, operator_requests(delta) / window
    peak, rss = operator.memory("VmHWM"), operator.memory("VmRSS")
    top = ", ".join(f"{verb} {resource}{'/' + sub if sub else ''} {n / window:.1f}"
                    for (verb, resource, sub), n in delta.most_common(6))

    limit = chart_memory_limit()
    thousand, ten_thousand = count == 1000, count >= 10_000  # the issue's goals, at the sizes they name
    goals = [("asset -> Job p99 <= 10 s (at 1,000)", p99 <= 10.0 if thousand else None),
             ("every Job within 120 s (at 10,000)", last_job <= 120.0 if ten_thousand else None),
             ("operator RSS <= 256 MiB (at 1,000)", peak <= 256 * MIB if thousand else None),
             ("operator RSS <= 768 MiB (at 10,000)", peak <= 768 * MIB if ten_thousand else None),
             ("idle operator CPU <= 0.05 core (at 1,000)", cpu <= 0.05 if thousand else None),
             ("idle operator CPU <= 0.2 core (at 10,000)", cpu <= 0.2 if ten_thousand else None)]
    print(f"asset -> Job: p50 {p50:.2f} s, p99 {p99:.2f} s, max {max(latencies):.2f} s; last Job after "
          f"{last_job:.1f} s; operator CPU until then {burst_cpu:.2f} core (1.0: one core, its GIL's ceiling)"
          + (f"; {cluster_cpu} on {os.cpu_count()} CPUs" if cluster_cpu else ""))
    if gc_start is not None and gc_end is not None:
        print(f"operator's CPU in Python's garbage collector until then: {gc_end - gc_start:.1f} s "
              f"({(gc_end - gc_start) / max(1e-9, burst_cpu_seconds):.0%} of its CPU)")
    print("API requests per asset until the last Job: " + ", ".join(
        f"{verb} {resource}{'/' + sub if sub else ''} {n / count:.2f}"
        for (verb, resource, sub), n in burst.most_common(8)))
    print(f"operator RSS: peak {peak / MIB:.0f} MiB, now {rss / MIB:.0f} MiB"
          + (f"; chart limit {limit / MIB:.0f} MiB (peak is {peak / limit:.0%} of it)" if limit else ""))
    print(f"settling {window:.0f} s after the last Job: operator CPU {settling:.3f} core")
    print(f"then quiet {window:.0f} s: operator CPU {cpu:.3f} core; API server {all_rps:.1f} requests/s "
          f"(non-watch), {operator_rps:.1f}/s of them the operator's kinds; busiest: {top}")
    print(f"| {count:,} | {last_job:.1f} s | {p50:.1f} s / {p99:.1f} s | {peak / MIB:.0f} MiB | {cpu:.3f} core "
          f"| {operator_rps:.1f}/s |", flush=True)
    missed = False
    for goal, met in goals:
        if met is not None:
            print(f"goal {goal}: {'met' if met else 'MISSED'}")
            missed = missed or not met
    if limit and peak > limit:
        print("the operator's peak RSS passed the chart's memory limit: it would be OOM-killed at this size")
        missed = True
    print(f"deleting all {count} ...", flush=True)
    started_delete = time.monotonic()

    def delete(name: str) -> None:
        try:
            custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, MEDIA_ASSET.plural, name,
                                                   _request_timeout=(5, 60))
        except ApiException as err:
            if err.status != 404:
                raise

    with ThreadPoolExecutor(max_workers=16) as pool:  # as `kubectl delete --all` would, one call per asset
        list(pool.map(delete, names))
    left = count
    while time.monotonic() - started_delete < job_timeout * 2:
        left = len(custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, MEDIA_ASSET.plural,
                                                        _request_timeout=(5, 60))["items"])
        if left == 0:
            break
        time.sleep(1.0)
    deleted_in = time.monotonic() - started_delete
    print(f"delete all {count}: {deleted_in:.1f} s" + ("" if left == 0 else f" ({left} still there)"))
    print("machine load average (1, 5, 15 min) at the end: " + ", ".join(f"{v:.1f}" for v in os.getloadavg())
          + f" on {os.cpu_count()} CPUs")
    if left:
        return 1
    return 1 if strict and missed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=1000)
    parser.add_argument("--quiet-seconds", type=float, default=60.0)
    parser.add_argument("--job-timeout", type=float, default=600.0, help="give up when Jobs are missing after this")
    parser.add_argument("--smoke", action="store_true", help="20 assets and a 10 s quiet window: it runs, no goals")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    if args.smoke:
        args.assets, args.quiet_seconds, args.job_timeout, args.strict = 20, 10.0, 180.0, False
    # The operator (started by the local cluster with this environment) serves its metrics where this reads them.
    os.environ["KUBEMAM_METRICS_PORT"] = str(free_port())
    with tempfile.TemporaryDirectory(prefix="kubemam-bench-") as tmp:
        state = cluster.up(Path(tmp))
        try:
            return run(state, args.assets, args.quiet_seconds, args.job_timeout, args.strict)
        finally:
            cluster.down(Path(tmp))


if __name__ == "__main__":
    raise SystemExit(main())
