"""What an asset reconcile reads, kept in memory from the operator's own watches (Kopf indexes).

A reconcile reads ladders, policies, windows and its Jobs from here instead of GETting and LISTing
them: the API server sees the writes, not the reads. Kopf fills every index from its watch before any
other handler runs, so a reconcile never sees a half-listed cluster. The index functions (registered in
controllers/main.py) keep only what a reconcile reads: a Job's pod template (its step input) is dropped.

The rights planner reads its namespace's assets from here too (asset_entry), so a window's end
does not wait on a LIST of the whole catalogue.

One small cache holds what no watch carries: a finished Job's result (its pod's termination message,
read once per Job and kept by the Job's uid).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kubemam.api.kinds import MEDIA_ASSET
from kubemam.plan.jobs import LABEL_ASSET
from kubemam.plan.jobstate import JobObservation, job_state, observe_job

LadderKey = tuple[str, str]  # (namespace, name)
JobKey = tuple[str, str]  # (namespace, owning asset's uid)

ASSET_REF_FIELDS = ("ladderRef", "archivePolicyRef")


# --- What each index keeps of an object (pure: Kopf calls these through controllers/main.py) ----------


def spec_entry(namespace: str, name: str, body: Mapping[str, Any]) -> dict[LadderKey, dict[str, Any]]:
    """A ladder or a policy: its spec, by (namespace, name)."""
    return {(namespace, name): dict(body.get("spec") or {})}


def window_entry(namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A RightsWindow, by namespace: its name, whether it is being deleted, and its spec."""
    meta = body.get("metadata") or {}
    kept = {"name": name, **({"deletionTimestamp": meta["deletionTimestamp"]} if meta.get("deletionTimestamp") else {})}
    return {namespace: {"metadata": kept, "spec": dict(body.get("spec") or {})}}


# What the rights planner reads of an asset's status (controllers/rights.py gather).
RIGHTS_STATUS_FIELDS = ("packages", "distribution", "conditions", "qc", "qcApproval")


class AssetEntry(NamedTuple):
    """One asset as every reader keeps it: the metrics inventory (its phase), a ladder's or a policy's
    reconcile (what it names) and the rights planner (rights: the rest it reads, as compact JSON — a string
    costs a tenth of the dicts it encodes, and 10,000 assets are kept). One index, not one per reader: Kopf's
    cost per index call, not the function it calls, was a tenth of the operator's CPU in a burst of assets."""

    name: str
    resource_version: str
    phase: str | None
    refs: tuple[tuple[str, str], ...]  # (spec field, referenced name)
    rights: str


def asset_entry(namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, AssetEntry]:
    """An asset, by namespace."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    refs = tuple((ref_field, str(ref)) for ref_field in ASSET_REF_FIELDS
                 if (ref := (spec.get(ref_field) or {}).get("name")))
    kept = {"labels": dict(meta.get("labels") or {}), "generation": meta.get("generation"),
            "deletionTimestamp": meta.get("deletionTimestamp"), "finalizers": list(meta.get("finalizers") or []),
            "status": {k: status[k] for k in RIGHTS_STATUS_FIELDS if k in status}}
    return {namespace: AssetEntry(name, str(meta.get("resourceVersion") or ""), status.get("phase") or None, refs,
                                  json.dumps(kept, separators=(",", ":")))}


def rights_asset(entry: AssetEntry) -> dict[str, Any]:
    """An asset as the rights planner reads it: an object body (metadata and the status fields kept)."""
    kept = json.loads(entry.rights)
    meta = {"name": entry.name, "resourceVersion": entry.resource_version, "labels": kept["labels"],
            "generation": kept["generation"], "finalizers": kept.get("finalizers") or []}
    if kept.get("deletionTimestamp"):
        meta["deletionTimestamp"] = kept["deletionTimestamp"]
    return {"metadata": meta, "status": kept["status"]}


def job_entry(namespace: str, body: Mapping[str, Any]) -> dict[JobKey | str, dict[str, Any]]:
    """A kubemam Job by namespace (the metrics inventory counts these) and, an asset's step Job, by its owner's
    uid too; only what observe_job reads (the pod template, with its step input, is left out)."""
    meta = body.get("metadata") or {}
    owner = next((o for o in meta.get("ownerReferences") or []
                  if o.get("kind") == MEDIA_ASSET.kind and o.get("controller")), None)
    spec = body.get("spec") or {}
    trimmed = {
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "labels", "annotations", "creationTimestamp",
                                          "deletionTimestamp") if k in meta},
        "spec": {k: spec[k] for k in ("ttlSecondsAfterFinished", "suspend") if spec.get(k) is not None},
        "status": dict(body.get("status") or {}),
    }
    if owner is None:  # a distribution Job (the rights clock's), or one nobody owns
        return {namespace: trimmed}
    return {namespace: trimmed, (namespace, str(owner.get("uid"))): trimmed}


@dataclass(frozen=True)
class RunningStep:
    """A running step Job of an asset, the one whose log its reconcile reads progress from."""

    namespace: str
    asset: str
    job: str


# --- Reading them --------------------------------------------------------------------------------


def _values(index: Mapping[Any, Iterable[Any]], key: Any) -> list[Any]:
    """A snapshot of one key's values. Kopf updates its indexes on the event loop while handler threads read
    them; a list taken in one C-level pass does not see half an update, and a rare resize is read again."""
    for _ in range(5):
        try:
            store = index.get(key)
            return list(store) if store is not None else []
        except RuntimeError:  # changed size during iteration
            continue
    store = index.get(key)
    return list(store) if store is not None else []


def _keys(index: Mapping[Any, Any]) -> list[Any]:
    """A snapshot of an index's keys, as _values takes one key's values."""
    for _ in range(5):
        try:
            return list(index.keys())
        except RuntimeError:  # changed size during iteration
            continue
    return list(index.keys())


@dataclass(frozen=True)
class Watched:
    """The operator's indexes, as a reconcile reads them (each a kopf.Index: key -> the values of every object)."""

    ladders: Mapping[LadderKey, Iterable[dict[str, Any]]]
    policies: Mapping[LadderKey, Iterable[dict[str, Any]]]
    windows: Mapping[str, Iterable[dict[str, Any]]]
    jobs: Mapping[JobKey | str, Iterable[dict[str, Any]]]
    assets: Mapping[str, Iterable[AssetEntry]] = field(default_factory=dict)

    def ladder(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = _values(self.ladders, (namespace, name))
        return found[0] if found else None

    def policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = _values(self.policies, (namespace, name))
        return found[0] if found else None

    def namespace_windows(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's RightsWindows: {"metadata": {"name", "deletionTimestamp"?}, "spec"} each."""
        return _values(self.windows, namespace)

    def owned_jobs(self, namespace: str, owner_uid: str) -> list[dict[str, Any]]:
        return _values(self.jobs, (namespace, owner_uid))

    def namespace_jobs(self, namespace: str) -> list[dict[str, Any]]:
        """Every kubemam Job of the namespace (step and distribution Jobs), trimmed as job_entry keeps them."""
        return _values(self.jobs, namespace)

    def namespace_assets(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's assets: {"metadata": {"name"}, "status": {"phase"?}} each."""
        return [{"metadata": {"name": e.name}, "status": {"phase": e.phase} if e.phase else {}}
                for e in _values(self.assets, namespace)]

    def rights_assets(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's assets as the rights planner reads them (AssetEntry.rights)."""
        return [rights_asset(entry) for entry in _values(self.assets, namespace)]

    def assets_referencing(self, namespace: str, field: str, name: str) -> list[str]:
        """A scan of the namespace's assets: only a ladder's or a policy's reconcile asks, and a scan of 10,000
        entries costs less than the index call per asset event a key per reference took."""
        return sorted({e.name for e in _values(self.assets, namespace) if (field, name) in e.refs})

    def running_steps(self) -> list[RunningStep]:
        """Per asset with a running step Job, the first by name (as controllers/asset.py gather picks it)."""
        steps = []
        for key in _keys(self.jobs):
            if not isinstance(key, tuple):
                continue  # a namespace's list: the same Jobs again
            running = sorted((job for job in _values(self.jobs, key) if job_state(job)[0] == "Running"),
                             key=lambda j: str(j["metadata"].get("name", "")))
            for job in running[:1]:
                labels = job["metadata"].get("labels") or {}
                if labels.get(LABEL_ASSET):
                    steps.append(RunningStep(key[0], str(labels[LABEL_ASSET]), str(job["metadata"]["name"])))
        return steps


# --- Caches for what no watch carries ---------------------------------------------------------------


class JobResults:
    """A finished Job's termination message, read once and kept by the Job's uid (a Job's result never
    changes once it finished). Bounded: the oldest go first; a forgotten one is simply read again."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, uid: str, read: Callable[[], str | None]) -> str | None:
        with self._lock:
            if uid in self._items:
                self._items.move_to_end(uid)
                return self._items[uid]
        message = read()
        if message is not None and uid:  # none yet (the pod's status not written): read again next time
            with self._lock:
                self._items[uid] = message
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
        return message


JOB_RESULTS = JobResults()


class JobTransitions:
    """What a step Job last looked like to the asset planner (its JobObservation, without the result), per
    Job uid, when a reconcile of its owner last succeeded. The Job controller rewrites a Job's status far
    more often than the planner's view of it changes (a refused pod, a ready count, a start time): those
    events need no reconcile. Bounded: a forgotten Job reconciles once more."""

    def __init__(self, capacity: int = 50_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def changed(self, uid: str, view: Any) -> bool:
        with self._lock:
            return not uid or self._seen.get(uid) != view

    def record(self, uid: str, view: Any) -> None:
        if not uid:
            return
        with self._lock:
            self._seen[uid] = view
            self._seen.move_to_end(uid)
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)

    def forget(self, uid: str) -> None:
        with self._lock:
            self._seen.pop(uid, None)


JOB_TRANSITIONS = JobTransitions()


class WaitingReferences:
    """The assets whose last plan found a ladder or policy they name missing, by (namespace, field, name): a
    ladder or policy that appears reconciles those, not every asset naming it. (Applied together with a
    thousand assets, it had reconciled every asset it found indexed, each of which its own creation handler
    reconciled as well.) The index is read and the asset noted under the lock its taker holds, and Kopf updates
    the index before it runs the reference's own handler: a reference that appears meanwhile is never missed.
    A reference deleted while assets name it has them noted too (it may be made again under its name)."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str, str], set[str]] = {}
        self._lock = threading.Lock()

    def resolve(self, namespace: str, field: str, name: str, asset: str,
                look_up: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        """What `look_up` finds, noting the asset as waiting while it finds nothing."""
        key = (namespace, field, name)
        with self._lock:
            found = look_up()
            if found is None:
                self._waiting.setdefault(key, set()).add(asset)
            elif key in self._waiting:
                self._waiting[key].discard(asset)
                if not self._waiting[key]:
                    del self._waiting[key]
            return found

    def note(self, namespace: str, field: str, name: str, assets: Iterable[str]) -> None:
        """These assets wait for the reference (it was deleted while they named it, or their reconcile failed)."""
        assets = list(assets)
        if assets:
            with self._lock:
                self._waiting.setdefault((namespace, field, name), set()).update(assets)

    def take(self, namespace: str, field: str, name: str) -> list[str]:
        """The assets waiting for this reference, forgotten here (their reconcile notes them again if need be)."""
        with self._lock:
            return sorted(self._waiting.pop((namespace, field, name), set()))


WAITING_REFERENCES = WaitingReferences()


def job_view(job: dict[str, Any]) -> tuple[JobObservation, bool]:
    """What JOB_TRANSITIONS keeps of a Job: the planner's observation of it, and whether it is being deleted."""
    return observe_job(job), bool((job.get("metadata") or {}).get("deletionTimestamp"))
