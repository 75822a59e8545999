"""Step faults (issue 15): no transient fault fails a step for good, no result is lost with its pod.

A local cluster of its own (scheduler, process node, MinIO, the operator), with a FaultProxy between the step
pods and MinIO: the operator's KUBEMAM_S3_ENDPOINT, the endpoint every Job gets, is the proxy. The waits are
shrunk by the operator's knobs, not by sleeping: a pod waits 3 s for S3 (KUBEMAM_S3_RETRY_SECONDS, passed on
to the Jobs), a Job fails after its second failed pod (KUBEMAM_JOB_BACKOFF_LIMIT=1), attempts back off 5 s
doubling to 20 s, and assets not Ready are re-planned every 2 s.

- S3 answering 503 SlowDown long enough to fail the Jobs of in-flight ingests and a transcode: every asset
  reaches Ready after it ends, nothing fails for good, one finished Job per step's work;
- a transcode pod deleted while it encodes: the Job makes a new pod and the step finishes;
- an ingest pod deleted after it succeeded, while the operator was down: the status gets its technical
  metadata from the committed manifest (a recover attempt), and is never Ready without it;
- a truncated HTTP master: transient failures, then ingested whole once the server serves it whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from kubernetes import client

from kubemam.media.sample import make_sample
from kubemam.plan.hashing import input_hash
from kubemam.steps.base import work_inputs
from kubemam.storage.s3 import read_committed
from kubemam.storage.uri import S3Uri
from tests.faults.proxy import FaultProxy, Mode
from tests.helpers import LocalStack, local_stack, wait_for

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")

NAMESPACE = "kubemam-fault-steps"
BUCKET = "kubemam-library"
KNOBS = {"KUBEMAM_S3_RETRY_SECONDS": "3", "KUBEMAM_JOB_BACKOFF_LIMIT": "1", "KUBEMAM_STEP_RETRY_SECONDS": "5",
         "KUBEMAM_STEP_RETRY_MAX_SECONDS": "20", "KUBEMAM_RECHECK_SECONDS": "2"}
RUNG = {"name": "h264-180p", "codec": "h264", "width": 320, "height": 180, "profile": "main", "preset": "veryfast",
        "rateControl": {"mode": "crf", "crf": 30}}


@dataclass
class Steps:
    stack: LocalStack
    proxy: FaultProxy


@pytest.fixture(scope="module")
def steps(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Steps]:
    tmp = tmp_path_factory.mktemp("fault-steps")
    with FaultProxy(upstream_port=1) as proxy:  # aimed at MinIO as soon as it runs
        env = {**KNOBS, "KUBEMAM_S3_ENDPOINT": proxy.url}
        with local_stack(control_plane, tmp, NAMESPACE, operator_env=env) as stack:
            proxy.upstream = ("127.0.0.1", int(urlparse(stack.s3.endpoint).port or 0))
            yield Steps(stack, proxy)


# --- what the API server holds, sampled while a scenario runs ---------------------------------


def _input(job: Any) -> dict[str, Any]:
    env = job.spec.template.spec.containers[0].env
    return dict(json.loads(next(e.value for e in env if e.name == "KUBEMAM_STEP_INPUT")))


def _work(job: Any) -> tuple[str, str, str]:
    """(asset, step, hash of the work): every attempt of the same work shares it."""
    labels = job.metadata.labels
    return labels["kubemam.io/asset"], labels["kubemam.io/step"], input_hash(work_inputs(_input(job)))


def _condition(job: Any, type_: str) -> Any:
    return next((c for c in job.status.conditions or [] if c.type == type_ and c.status == "True"), None)


def _finished(job: Any) -> bool:
    return _condition(job, "Complete") is not None or _condition(job, "Failed") is not None


@dataclass
class Watch:
    """Every 0.3 s: the assets' phases and conditions, and every Job as last seen (by uid)."""

    stack: LocalStack
    assets: tuple[str, ...]
    phases: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    reasons: dict[str, set[tuple[str, str, str]]] = field(default_factory=lambda: defaultdict(set))
    ready_without_technical: list[str] = field(default_factory=list)
    jobs: dict[str, Any] = field(default_factory=dict)
    most_unfinished: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Watch:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.sample()

    def _run(self) -> None:
        while not self.stop.wait(0.3):
            with contextlib.suppress(Exception):  # an API blip must not end the watch; the next sample counts
                self.sample()

    def sample(self) -> None:
        batch = client.BatchV1Api(self.stack.api)
        unfinished: dict[tuple[str, str], int] = defaultdict(int)
        for job in batch.list_namespaced_job(NAMESPACE).items:
            labels = job.metadata.labels or {}
            if labels.get("kubemam.io/asset") not in self.assets:
                continue
            self.jobs[job.metadata.uid] = job
            if not _finished(job) and job.metadata.deletion_timestamp is None:
                unfinished[(labels["kubemam.io/asset"], labels["kubemam.io/step"])] += 1
        for key, count in unfinished.items():
            self.most_unfinished[key] = max(self.most_unfinished[key], count)
        for name in self.assets:
            status = self.stack.custom.get("mediaassets", name).get("status") or {}
            self.phases[name].add(str(status.get("phase")))
            for cond in status.get("conditions") or []:
                self.reasons[name].add((cond["type"], cond["status"], cond.get("reason", "")))
            ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
            if ready and ready["status"] == "True" and not status.get("technical"):
                self.ready_without_technical.append(name)

    def finished_jobs(self, state: str) -> list[Any]:
        return [j for j in self.jobs.values() if _condition(j, state) is not None]

    def assert_nothing_failed_for_good(self) -> None:
        permanent = [j.metadata.name for j in self.finished_jobs("Failed")
                     if _condition(j, "Failed").reason == "PodFailurePolicy"]
        assert permanent == [], f"permanent failures: {permanent}"
        assert not [a for a in self.assets if "Failed" in self.phases[a]], dict(self.phases)
        assert self.ready_without_technical == []
        # At most one Job per asset and step ran at any moment; each piece of work was done by one Job (a recover
        # attempt only reports what that one committed).
        assert all(count <= 1 for count in self.most_unfinished.values()), dict(self.most_unfinished)
        done: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        for job in self.finished_jobs("Complete"):
            if not (_input(job).get("attempt") or {}).get("recover"):
                done[_work(job)].append(job.metadata.name)
        assert all(len(names) == 1 for names in done.values()), dict(done)


def _status(stack: LocalStack, name: str) -> dict[str, Any]:
    return dict(stack.custom.get("mediaassets", name).get("status") or {})


def _ready(stack: LocalStack, name: str) -> dict[str, Any] | None:
    status = _status(stack, name)
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
    if status.get("phase") == "Failed":
        raise AssertionError(f"{name} failed: {status.get('conditions')}\n{stack.log.read_text()[-3000:]}")
    return status if ready and ready["status"] == "True" else None


def _ladder(name: str, rung: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kubemam.io/v1alpha1", "kind": "TranscodeLadder", "metadata": {"name": name},
            "spec": {"segmentDurationSeconds": 2, "renditions": [rung], "audio": [{"name": "stereo",
                                                                                  "bitrateKbps": 64}]}}


def _asset(name: str, uri: str, ladder: str | None = None, checksum: str | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"uri": uri}
    if checksum:
        source["checksum"] = {"algorithm": "sha256", "value": checksum}
    spec: dict[str, Any] = {"source": source, "metadata": {"title": name}}
    if ladder:
        spec["ladderRef"] = {"name": ladder}
    return {"apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset", "metadata": {"name": name}, "spec": spec}


def _upload(stack: LocalStack, tmp_path: Path, key: str, seconds: int = 8, width: int = 320,
            height: int = 180) -> str:
    master = make_sample(tmp_path / key, width=width, height=height, seconds=seconds)
    stack.store.upload_file(str(master), BUCKET, f"incoming/{key}")
    return hashlib.sha256(master.read_bytes()).hexdigest()


def _renditions_intact(stack: LocalStack, status: dict[str, Any]) -> None:
    """Every rendition in status is in storage, byte for byte as its manifest and the status say."""
    for rendition in status.get("renditions") or []:
        where = S3Uri.parse(rendition["uri"])
        body = stack.store.get_object(Bucket=where.bucket, Key=where.key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == rendition["sha256"], rendition["name"]
        prefix = S3Uri.parse(rendition["manifestUri"].removesuffix("/manifest.json"))
        assert read_committed(stack.store, prefix, rendition["specHash"]) is not None, rendition["name"]


def _ingest_manifest(stack: LocalStack, status: dict[str, Any]) -> S3Uri:
    return S3Uri.parse(status["qc"]["reportUri"].removesuffix("/qc.json")).join("manifest.json")


# --- the scenarios ----------------------------------------------------------------------------


def test_s3_503_outlasting_backofflimit_fails_nothing_for_good(steps: Steps, tmp_path: Path) -> None:
    stack, proxy = steps.stack, steps.proxy
    names = ("slow-a", "slow-b", "slow-c")
    shas = {name: _upload(stack, tmp_path, f"{name}.mov") for name in names}
    stack.custom.create("transcodeladders", _ladder("small", RUNG))
    started = time.monotonic()
    with Watch(stack, names) as watch:
        stack.custom.create("mediaassets", _asset("slow-a", f"s3://{BUCKET}/incoming/slow-a.mov", "small"))
        wait_for(lambda: any(j.metadata.labels["kubemam.io/step"] == "transcode" for j in watch.jobs.values()),
                 timeout=180, what="slow-a to be ingested and its transcode Job created")
        proxy.set(Mode.S3_UNAVAILABLE)
        fault_start = time.monotonic()
        for name in names[1:]:
            stack.custom.create("mediaassets", _asset(name, f"s3://{BUCKET}/incoming/{name}.mov", "small"))

        def exhausted() -> set[str]:
            """Assets with a Job that spent its backoffLimit, waiting for their next attempt."""
            spent = {j.metadata.labels["kubemam.io/asset"] for j in watch.finished_jobs("Failed")
                     if _condition(j, "Failed").reason == "BackoffLimitExceeded"}
            return spent if spent == set(names) else set()

        def twice() -> bool:
            """The same work failed by two Jobs in a row: attempts go on past the first, backing off longer."""
            spent: dict[tuple[str, str, str], int] = defaultdict(int)
            for job in watch.finished_jobs("Failed"):
                spent[_work(job)] += 1
            return max(spent.values(), default=0) >= 2

        wait_for(exhausted, timeout=240, what="a Job of every asset to exhaust its backoffLimit during the outage")
        wait_for(twice, timeout=240, what="a second attempt of some step to fail too")
        wait_for(lambda: all(("Ready", "False", "RetryScheduled") in watch.reasons[n] for n in names), timeout=60,
                 what="every asset to show RetryScheduled")
        proxy.set(Mode.PASS)
        fault_end, fault_end_wall = time.monotonic(), time.time()
        first_success: dict[str, float] = {}

        def all_ready() -> bool:
            for name in names:
                if name not in first_success and _ready(stack, name):
                    first_success[name] = time.monotonic() - fault_end
            return len(first_success) == len(names)

        wait_for(all_ready, timeout=300, what="every asset to be Ready after the outage")
    watch.assert_nothing_failed_for_good()
    # Recovery: the first step Job to finish its work after S3 came back.
    completions = [j.status.completion_time.timestamp() for j in watch.finished_jobs("Complete")
                   if j.status.completion_time and j.status.completion_time.timestamp() >= fault_end_wall - 1]
    first_done = min(completions) - fault_end_wall if completions else float("nan")
    failed = watch.finished_jobs("Failed")
    retried = [j for j in watch.jobs.values() if (_input(j).get("attempt") or {}).get("number", 1) >= 2]
    assert {j.metadata.labels["kubemam.io/step"] for j in failed} >= {"ingest", "transcode"}
    assert {j.metadata.labels["kubemam.io/asset"] for j in retried} == set(names)
    for name in names:
        status = _status(stack, name)
        assert status["technical"]["sha256"] == shas[name]
        assert {r["name"] for r in status["renditions"]} == {"h264-180p", "stereo"}
        _renditions_intact(stack, status)
        manifest = _ingest_manifest(stack, status)
        assert stack.store.head_object(Bucket=manifest.bucket, Key=manifest.key)
    print(f"\n[s3-503] outage {fault_end - fault_start:.0f}s: {len(failed)} Jobs failed (backoffLimit spent), "
          f"{len(retried)} re-run attempts (up to attempt "
          f"{max((_input(j).get('attempt') or {}).get('number', 1) for j in watch.jobs.values())}), "
          f"0 permanent; Ready after the outage ended: "
          + ", ".join(f"{n} {t:.0f}s" for n, t in sorted(first_success.items()))
          + f"; first step Job done {first_done:.0f}s after it; scenario {time.monotonic() - started:.0f}s")


def test_a_transcode_pod_deleted_while_it_encodes_is_replaced_and_the_step_finishes(
        steps: Steps, tmp_path: Path) -> None:
    stack = steps.stack
    core = client.CoreV1Api(stack.api)
    _upload(stack, tmp_path, "deleted.mov", seconds=40, width=640, height=360)
    stack.custom.create("transcodeladders", _ladder("wide", {**RUNG, "name": "h264-360p", "width": 640,
                                                             "height": 360, "preset": "medium"}))
    started = time.monotonic()
    with Watch(stack, ("deleted",)) as watch:
        stack.custom.create("mediaassets", _asset("deleted", f"s3://{BUCKET}/incoming/deleted.mov", "wide"))

        def encoding() -> Any:
            pods = core.list_namespaced_pod(NAMESPACE, label_selector="kubemam.io/asset=deleted,"
                                                                      "kubemam.io/step=transcode").items
            for pod in pods:
                if pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None:
                    log = core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE, tail_lines=5)
                    if "KUBEMAM_PROGRESS" in log and '"percent": 0' not in log.splitlines()[-1]:
                        return pod
            return None

        pod = wait_for(encoding, timeout=240, what="the transcode pod to be encoding")
        job_name = pod.metadata.labels["job-name"]
        core.delete_namespaced_pod(pod.metadata.name, NAMESPACE)
        deleted = time.monotonic()

        def replaced() -> Any:
            pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={job_name}").items
            return next((p for p in pods if p.metadata.uid != pod.metadata.uid and p.status.phase == "Running"), None)

        wait_for(replaced, timeout=60, what="the Job to make a new pod")
        new_pod = time.monotonic() - deleted
        status = wait_for(lambda: _ready(stack, "deleted"), timeout=300, what="the asset to be Ready")
        finished = time.monotonic() - deleted
    watch.assert_nothing_failed_for_good()
    job = client.BatchV1Api(stack.api).read_namespaced_job(job_name, NAMESPACE)
    assert (job.status.succeeded, job.status.failed) == (1, 1)  # the same Job: the deleted pod, then its successor
    transcodes = [j for j in watch.jobs.values() if j.metadata.labels["kubemam.io/step"] == "transcode"]
    assert [j.metadata.name for j in transcodes] == [job_name]
    _renditions_intact(stack, status)
    print(f"\n[pod deleted] new pod running {new_pod:.0f}s after the deletion, asset Ready {finished:.0f}s after it; "
          f"scenario {time.monotonic() - started:.0f}s")


def test_an_ingest_result_lost_with_its_pod_is_read_back_from_the_manifest(steps: Steps, tmp_path: Path) -> None:
    stack = steps.stack
    core = client.CoreV1Api(stack.api)
    batch = client.BatchV1Api(stack.api)
    sha = _upload(stack, tmp_path, "lost.mov")
    started = time.monotonic()
    with Watch(stack, ("lost",)) as watch:
        stack.custom.create("mediaassets", _asset("lost", f"s3://{BUCKET}/incoming/lost.mov"))
        first = wait_for(lambda: next((j for j in watch.jobs.values() if j.status.active), None), timeout=120,
                         what="the ingest Job to run")
        stack.stop_operator()
        wait_for(lambda: _condition(batch.read_namespaced_job(first.metadata.name, NAMESPACE), "Complete"),
                 timeout=180, what="the ingest Job to succeed while the operator is down")
        output = S3Uri.parse(_input(first)["output"]).join(input_hash(work_inputs(_input(first)))[:16], "manifest.json")
        etag = stack.store.head_object(Bucket=output.bucket, Key=output.key)["ETag"]
        for pod in core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={first.metadata.name}").items:
            core.delete_namespaced_pod(pod.metadata.name, NAMESPACE, grace_period_seconds=0)
        wait_for(lambda: not core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={first.metadata.name}")
                 .items, timeout=60, what="the pod (and its termination message) to be gone")
        assert not _status(stack, "lost").get("technical")
        restarted = time.monotonic()
        stack.start_operator()
        status = wait_for(lambda: _ready(stack, "lost"), timeout=180, what="the asset to be Ready")
        recovered = time.monotonic() - restarted
    watch.assert_nothing_failed_for_good()
    assert status["technical"]["sha256"] == sha and status["technical"]["video"]["width"] == 320
    assert status["qc"]["verdict"] and status["previews"]["proxyUri"]
    ingests = sorted((j for j in watch.jobs.values() if j.metadata.labels["kubemam.io/step"] == "ingest"),
                     key=lambda j: j.metadata.creation_timestamp)
    assert [_input(j).get("attempt") for j in ingests] == [None, {"number": 2, "recover": True}]
    assert all(_condition(j, "Complete") for j in ingests)
    # The recover run reported what the first one committed; it committed nothing new.
    manifest = _ingest_manifest(stack, status)
    assert manifest == output
    assert stack.store.head_object(Bucket=manifest.bucket, Key=manifest.key)["ETag"] == etag
    print(f"\n[result lost] operator restarted, technical metadata read back from the manifest and Ready in "
          f"{recovered:.0f}s; scenario {time.monotonic() - started:.0f}s")


def test_a_permanent_failure_waits_and_runs_again_on_the_retry_annotation(steps: Steps, tmp_path: Path) -> None:
    """Not a fault the system can ride out (the master is not there yet): Failed for good, until someone who
    fixed it says so with steps.kubemam.io/retry=<token>; the token reaches the new attempt's input."""
    stack = steps.stack
    started = time.monotonic()
    with Watch(stack, ("late-master",)) as watch:
        stack.custom.create("mediaassets", _asset("late-master", f"s3://{BUCKET}/incoming/late-master.mov"))
        failed = wait_for(lambda: (c := stack.custom.condition("mediaassets", "late-master", "Ingested"))
                          and c["status"] == "False" and c, timeout=120, what="IngestFailed")
        assert failed["reason"] == "IngestFailed" and "does not exist" in failed["message"]
        time.sleep(6)  # longer than the backoff of a transient failure: a permanent one is not re-run
        assert len(watch.jobs) == 1
        sha = _upload(stack, tmp_path, "late-master.mov")
        asked = time.monotonic()
        stack.custom.patch("mediaassets", "late-master",
                           {"metadata": {"annotations": {"steps.kubemam.io/retry": "uploaded"}}})
        wait_for(lambda: (c := stack.custom.condition("mediaassets", "late-master", "Ready")) and c["status"] == "True",
                 timeout=120, what="the asset to be Ready")
    status = _status(stack, "late-master")
    assert status["technical"]["sha256"] == sha
    ingests = sorted(watch.jobs.values(), key=lambda j: j.metadata.creation_timestamp)
    assert [_input(j).get("attempt") for j in ingests] == [None, {"number": 2, "retry": "uploaded"}]
    assert _condition(ingests[0], "Failed").reason == "PodFailurePolicy"
    print(f"\n[retry annotation] Ready {time.monotonic() - asked:.0f}s after the annotation; "
          f"scenario {time.monotonic() - started:.0f}s")


class _Master(http.server.BaseHTTPRequestHandler):
    """The master over HTTP: the first `truncated` GETs declare the whole length and close after a third."""

    body = b""
    truncated = 0
    served: list[tuple[float, int]] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        cut = len(type(self).served) < self.truncated
        sent = self.body[:len(self.body) // 3] if cut else self.body
        type(self).served.append((time.monotonic(), len(sent)))
        self.send_response(200)
        self.send_header("Content-Type", "video/quicktime")
        self.send_header("Content-Length", str(len(self.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(sent)
        self.close_connection = True

    def log_message(self, *_: object) -> None:
        pass


def test_a_truncated_http_master_fails_transiently_then_is_ingested_whole(steps: Steps, tmp_path: Path) -> None:
    stack = steps.stack
    master = make_sample(tmp_path / "http.mov", width=320, height=180, seconds=8)
    body = master.read_bytes()
    sha = hashlib.sha256(body).hexdigest()
    # Truncated for the Job's two pods (backoffLimit 1): the Job fails, and the next attempt gets it whole.
    handler = type("Master", (_Master,), {"body": body, "truncated": 2, "served": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started = time.monotonic()
    try:
        with Watch(stack, ("over-http",)) as watch:
            stack.custom.create("mediaassets", _asset("over-http", f"http://127.0.0.1:{server.server_address[1]}"
                                                      "/master.mov", checksum=sha))
            status = wait_for(lambda: _ready(stack, "over-http"), timeout=240, what="the asset to be Ready")
    finally:
        server.shutdown()
    watch.assert_nothing_failed_for_good()
    assert [size for _, size in handler.served][:3] == [len(body) // 3, len(body) // 3, len(body)]
    assert status["technical"]["sha256"] == sha and status["technical"]["sizeBytes"] == len(body)
    assert ("Ingested", "False", "IngestFailed") not in watch.reasons["over-http"]
    failed = watch.finished_jobs("Failed")
    assert [_condition(j, "Failed").reason for j in failed] == ["BackoffLimitExceeded"]
    whole_at = handler.served[2][0]
    print(f"\n[truncated master] {len(failed)} Job failed on short reads (2 pods, exit 1), the next attempt got "
          f"it whole; Ready {time.monotonic() - whole_at:.0f}s after the whole download started; "
          f"scenario {time.monotonic() - started:.0f}s")
