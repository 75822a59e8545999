"""Rights enforcement for one namespace: gather windows, assets and targets, record what finished
distribute Jobs did, plan (plan/availability.py), write window and asset status, and start the next
distribute Job. One Job at a time per namespace, so a slow publish can never land after the
takedown that followed it.

The clock (RightsClock) wakes the reconcile at the next window transition to the second; Kopf's
resume handlers reconcile every window on start, so a window that closed while the operator was
down is taken down at once.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from kubemam.api.asset import DistributionStatus, MediaAssetStatus
from kubemam.api.common import API_VERSION
from kubemam.api.distribution import TARGETS_CONFIGMAP, TARGETS_KEY, DistributionTarget, parse_targets
from kubemam.api.kinds import MEDIA_ASSET, RIGHTS_WINDOW
from kubemam.api.rights import HistoryEntry, RightsWindowSpec, RightsWindowStatus
from kubemam.config import OperatorConfig
from kubemam.kubeapi import KubeApi
from kubemam.metrics import DISTRIBUTION_ACTIONS, DISTRIBUTION_FAILED_ATTEMPTS, TAKEDOWN_LATENCY
from kubemam.plan.availability import Action, Asset, RightsPlan, Window, plan_rights
from kubemam.plan.conditions import status_patch
from kubemam.plan.hashing import input_hash
from kubemam.plan.jobs import LABEL_MANAGED_BY, LABEL_STEP, STEP_INPUT_ENV, Owner, StepJobRequest, build_step_job
from kubemam.plan.jobstate import job_state
from kubemam.plan.rights import plan_window

log = logging.getLogger(__name__)

DISTRIBUTE = "distribute"

APPLIED = "kubemam.io/applied"
# Linux caps one environment string at 128 KiB; an action is ~260 bytes of step input.
MAX_BATCH = 200
RECORDED_JOB_TTL = 86400
_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


def _package_prefix(status: MediaAssetStatus) -> str | None:
    for package in status.packages or []:
        return package.manifest_uri.rsplit("/", 1)[0]
    return None


def _targets(api: KubeApi, namespace: str) -> tuple[list[DistributionTarget], str | None]:
    data = api.config_map_data(namespace, TARGETS_CONFIGMAP)
    if data is None:
        return [], None
    try:
        return parse_targets(yaml.safe_load(data.get(TARGETS_KEY) or "[]")), None
    except (ValueError, yaml.YAMLError) as err:  # pydantic's ValidationError is a ValueError
        return [], f"ConfigMap {TARGETS_CONFIGMAP} key {TARGETS_KEY} is invalid: {err}"


def _job_inputs(job: dict[str, Any]) -> dict[str, Any]:
    env = job["spec"]["template"]["spec"]["containers"][0].get("env") or []
    raw = next((e.get("value") for e in env if e.get("name") == STEP_INPUT_ENV), None)
    return dict(json.loads(raw)) if raw else {}


def _parse_time(value: str | None) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else datetime.now(UTC)


def _record(api: KubeApi, namespace: str, job: dict[str, Any], assets: dict[str, dict[str, Any]],
            history: dict[str, list[HistoryEntry]], ends: dict[str, datetime]) -> None:
    """Carry a succeeded distribute Job into asset status, window history, Events and the log."""
    at = _parse_time((job.get("status") or {}).get("completionTime"))
    for action in _job_inputs(job).get("actions") or []:
        body = assets.get(action["asset"])
        published = action["action"] == "publish"
        verb: Literal["Published", "TakenDown"] = "Published" if published else "TakenDown"
        if body is not None:
            _set_distribution(api, namespace, body, action, verb, at)
        history[action["window"]].append(HistoryEntry(
            at=at, action=verb, asset=action["asset"], channel=action["channel"],
            territories=action["territories"], target=action["target"], verified=True))
        DISTRIBUTION_ACTIONS.labels(namespace=namespace, channel=action["channel"], action=action["action"]).inc()
        end = ends.get(action["window"])
        if not published and end is not None and end <= at:
            TAKEDOWN_LATENCY.labels(channel=action["channel"]).observe((at - end).total_seconds())
        log.info(json.dumps({"event": verb.lower(), "namespace": namespace, "asset": action["asset"],
                             "target": action["target"], "channel": action["channel"],
                             "territories": action["territories"], "window": action["window"],
                             "at": at.isoformat(), "verified": True}))
        api.create_event(_event(namespace, action, verb, at))
    api.annotate_job(namespace, job["metadata"]["name"], {APPLIED: "true"}, ttl_seconds=RECORDED_JOB_TTL)


def _distribution(body: dict[str, Any]) -> list[DistributionStatus]:
    return list(MediaAssetStatus.model_validate(body.get("status") or {}).distribution or [])


def _set_distribution(api: KubeApi, namespace: str, body: dict[str, Any], action: dict[str, Any],
                      state: Literal["Published", "TakenDown", "Failed"], at: datetime) -> None:
    """The asset's record for the action's target, replaced in status and in the gathered body."""
    entries = [d for d in _distribution(body) if d.target != action["target"]]
    entries.append(DistributionStatus(target=action["target"], window=action["window"], channel=action["channel"],
                                      territories=action["territories"], state=state, since=at,
                                      origin=action["origin"]))
    body.setdefault("status", {})["distribution"] = [e.to_wire() for e in entries]
    api.patch_status(MEDIA_ASSET.plural, namespace, action["asset"], {"distribution": body["status"]["distribution"]})


def _record_failed(api: KubeApi, namespace: str, job: dict[str, Any], assets: dict[str, dict[str, Any]]) -> None:
    """A failed batch may have published some of its actions: mark them, so that with no window open
    they are taken down (a takedown of an origin that holds nothing verifies at once) and with one
    open they are published again."""
    for action in _job_inputs(job).get("actions") or []:
        body = assets.get(action["asset"])
        if action["action"] != "publish" or body is None:
            continue
        if any(d.target == action["target"] and d.state == "Published" for d in _distribution(body)):
            continue
        _set_distribution(api, namespace, body, action, "Failed", _failed_at(job))
    api.annotate_job(namespace, job["metadata"]["name"], {APPLIED: "true"}, ttl_seconds=RECORDED_JOB_TTL)


def _event(namespace: str, action: dict[str, Any], verb: str, at: datetime) -> dict[str, Any]:
    stamp = at.isoformat().replace("+00:00", "Z")
    where = f"{action['target']} ({action['channel']}, {', '.join(action['territories'])})"
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{action['window']}-", "namespace": namespace},
        "involvedObject": {"apiVersion": API_VERSION,
                           "kind": RIGHTS_WINDOW.kind, "name": action["window"], "namespace": namespace},
        "reason": verb, "type": "Normal", "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        "message": f"{action['asset']} {'published to' if verb == 'Published' else 'taken down from'} {where}; "
                   f"verified by listing {action['origin']}",
        "source": {"component": "kubemam"},
    }


def batch_of(actions: list[Action]) -> list[Action]:
    """The next Job's share: takedowns before any publish (they are the ones with a deadline, and a
    broken package must not hold them back), at most MAX_BATCH so the input fits one env variable."""
    takedowns = [a for a in actions if a.action == "takedown"]
    return (takedowns or actions)[:MAX_BATCH]


def retry_delay(failures: int) -> timedelta:
    """2, 4, 8 … seconds after the n-th failure, at most five minutes."""
    return timedelta(seconds=min(300, 2 ** max(1, failures)))


def _failed_at(job: dict[str, Any]) -> datetime:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            return _parse_time(cond.get("lastTransitionTime"))
    return datetime.now(UTC)


def _distribute_job(namespace: str, inputs: dict[str, Any], config: OperatorConfig) -> dict[str, Any]:
    request = StepJobRequest(owner=Owner(RIGHTS_WINDOW.kind, "rights", "", namespace), step=DISTRIBUTE,
                             inputs=inputs)
    job = build_step_job(request, config)
    # A batch serves many windows and outlives any one of them (deleting a window takes its content
    # down): no owner. It expires a day after it finished only once its outcome is recorded
    # (annotate_job), so an operator down for longer never loses one.
    job["metadata"].pop("ownerReferences", None)
    return job


def _write_windows(api: KubeApi, namespace: str, windows_raw: list[dict[str, Any]], windows: list[Window],
                   plan: RightsPlan, history: dict[str, list[HistoryEntry]], target_problem: str | None,
                   clock: datetime) -> None:
    """Window status after the Job is on its way: at a transition the takedown comes first."""
    for body in windows_raw:
        name = body["metadata"]["name"]
        window = next((w for w in windows if w.name == name), None)
        if window is None:
            continue
        conflicts = plan.conflicts.get(name, [])
        status = plan_window(window.spec, RightsWindowStatus.model_validate(body.get("status") or {}),
                             int(body["metadata"].get("generation") or 0), clock, plan.matched.get(name, 0),
                             conflicts, history.get(name))
        wire = status.to_wire()
        if target_problem:
            wire["conditions"] = [*(wire.get("conditions") or []), {
                "type": "TargetsValid", "status": "False", "reason": "InvalidTargets", "message": target_problem,
                "lastTransitionTime": clock.isoformat().replace("+00:00", "Z")}]
        patch = status_patch(body.get("status"), wire)
        if patch:
            api.patch_status(RIGHTS_WINDOW.plural, namespace, name, patch)


def reconcile_rights(api: KubeApi, config: OperatorConfig, namespace: str,
                     now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> datetime | None:
    """Returns the next instant this namespace needs a reconcile (a window transition)."""
    with _locks[namespace]:
        windows_raw = api.list_objects(RIGHTS_WINDOW.plural, namespace)
        assets_raw = {a["metadata"]["name"]: a for a in api.list_objects(MEDIA_ASSET.plural, namespace)}
        jobs = sorted(api.list_jobs(namespace, {LABEL_MANAGED_BY: "kubemam", LABEL_STEP: DISTRIBUTE}),
                      key=lambda j: (j.get("status") or {}).get("completionTime") or "")
        history: dict[str, list[HistoryEntry]] = defaultdict(list)
        windows = []
        for body in windows_raw:
            if body["metadata"].get("deletionTimestamp"):
                continue
            try:
                windows.append(Window(body["metadata"]["name"], RightsWindowSpec.model_validate(body["spec"])))
            except ValidationError:
                continue
        ends = {w.name: w.spec.end for w in windows}
        active = None
        failed: dict[str, int] = defaultdict(int)
        last_failure: dict[str, datetime] = {}
        for job in jobs:
            state, _ = job_state(job)
            annotations = job["metadata"].get("annotations") or {}
            if state == "Succeeded" and annotations.get(APPLIED) != "true":
                _record(api, namespace, job, assets_raw, history, ends)
            elif state == "Failed" and annotations.get(APPLIED) != "true":
                _record_failed(api, namespace, job, assets_raw)
            elif state in ("Pending", "Running"):
                active = job
            elif state == "Failed":
                key = _job_inputs(job).get("actionsHash", "")
                failed[key] += 1
                last_failure[key] = max(last_failure.get(key, datetime.min.replace(tzinfo=UTC)), _failed_at(job))

        targets, target_problem = _targets(api, namespace)
        assets = []
        for name, body in assets_raw.items():
            try:
                asset_status = MediaAssetStatus.model_validate(body.get("status") or {})
            except ValidationError:
                log.warning("asset %s/%s has a status that does not validate; left out of rights", namespace, name)
                continue
            assets.append(Asset(name, dict(body["metadata"].get("labels") or {}), _package_prefix(asset_status),
                                list(asset_status.distribution or [])))
        clock = now()
        plan = plan_rights(namespace, windows, assets, targets, clock)

        wake = plan.next_transition
        if target_problem:
            # An unreadable target list is not "every target removed": report it, move nothing.
            plan.actions = []
        if plan.actions and active is None:
            actions = [a.to_input() for a in batch_of(plan.actions)]
            actions_hash = input_hash(actions)
            if actions_hash in last_failure:
                # Retried until it succeeds, but with backoff: a broken origin must not become a Job storm.
                retry_at = last_failure[actions_hash] + retry_delay(failed[actions_hash])
                if clock < retry_at:
                    DISTRIBUTION_FAILED_ATTEMPTS.labels(namespace=namespace).set(failed[actions_hash])
                    _write_windows(api, namespace, windows_raw, windows, plan, history, target_problem, clock)
                    return min(retry_at, wake) if wake else retry_at
            inputs: dict[str, Any] = {"namespace": namespace, "actions": actions, "actionsHash": actions_hash,
                      "attempt": failed.get(actions_hash, 0),
                      "feeds": [{"uri": uri, "entries": entries} for uri, entries in sorted(plan.feeds.items())],
                      "usage": f"{config.library_uri.rstrip('/')}/usage/{namespace}/"}
            inputs["batch"] = input_hash(inputs)[:16]
            inputs["usage"] += f"{inputs['batch']}.json"
            job = _distribute_job(namespace, inputs, config)
            if api.create_job(job):
                log.info("created Job %s/%s: %d publish, %d takedown", namespace, job["metadata"]["name"],
                         sum(a["action"] == "publish" for a in actions),
                         sum(a["action"] == "takedown" for a in actions))
        if not plan.actions:
            DISTRIBUTION_FAILED_ATTEMPTS.labels(namespace=namespace).set(0)
        _write_windows(api, namespace, windows_raw, windows, plan, history, target_problem, clock)
        return wake


class RightsClock:
    """Wakes a namespace's rights reconcile at its next window transition, to the second.

    One thread and a heap of (instant, namespace); a namespace has one alarm, the earliest it was
    aimed at. Event handlers `poke` it instead of reconciling inline, so triggers that arrive while
    a reconcile runs collapse into one more run. The callback returns the following transition,
    so the clock keeps itself aimed.
    """

    def __init__(self, callback: Callable[[str], datetime | None]) -> None:
        self._callback = callback
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="rights-clock", daemon=True)
        self._thread.start()

    def aim(self, namespace: str, instant: datetime | None) -> None:
        if instant is None:
            return
        when = instant.timestamp()
        with self._wake:
            due = self._due.get(namespace)
            if due is not None and due <= when:
                return  # an earlier alarm covers it: that run re-aims at the next transition
            self._due[namespace] = when
            heapq.heappush(self._heap, (when, namespace))
            self._wake.notify()

    def poke(self, namespace: str) -> None:
        """Reconcile as soon as possible; a burst of pokes (100 windows resuming) is one run."""
        self.aim(namespace, datetime.now(UTC))

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.time():
                    self._wake.wait(timeout=None if not self._heap else max(0.0, self._heap[0][0] - time.time()))
                when, namespace = heapq.heappop(self._heap)
                if self._due.get(namespace) != when:
                    continue  # re-aimed since
                del self._due[namespace]
            try:
                self.aim(namespace, self._callback(namespace))
            except Exception:  # noqa: BLE001 - the clock must outlive one failed reconcile
                log.exception("rights reconcile of %s at its transition failed; retrying in 5 s", namespace)
                self.aim(namespace, datetime.fromtimestamp(time.time() + 5, UTC))
