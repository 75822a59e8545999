"""The operator's indexes and caches (controllers/indexes.py): what each keeps, and how often the API is asked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubemam.controllers import indexes

ASSET_UID = "0f0e0d0c-0000-4000-8000-000000000001"


def _job(name: str, owner_uid: str | None, **status: Any) -> dict[str, Any]:
    owners = [{"apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset", "name": "clip", "uid": owner_uid,
               "controller": True}] if owner_uid else []
    return {"metadata": {"name": name, "namespace": "media", "uid": f"uid-{name}", "ownerReferences": owners,
                         "labels": {"kubemam.io/step": "ingest"}, "annotations": {"kubemam.io/input-hash": "abc"}},
            "spec": {"ttlSecondsAfterFinished": 600, "template": {"spec": {"containers": [
                {"env": [{"name": "KUBEMAM_STEP_INPUT", "value": "x" * 10_000}]}]}}},
            "status": status}


def _watched(**indices: Any) -> indexes.Watched:
    base: dict[str, Any] = {"ladders": {}, "policies": {}, "windows": {}, "jobs": {}}
    return indexes.Watched(**{**base, **indices})


def test_a_step_job_is_kept_by_owner_and_namespace_without_its_pod_template() -> None:
    entries = indexes.job_entry("media", _job("clip-ingest-1", ASSET_UID, active=1))
    assert set(entries) == {"media", ("media", ASSET_UID)}
    kept = entries[("media", ASSET_UID)]
    assert kept["spec"] == {"ttlSecondsAfterFinished": 600}  # the step input is not held in memory
    assert kept["status"] == {"active": 1}
    assert kept["metadata"]["annotations"] == {"kubemam.io/input-hash": "abc"}
    assert "ownerReferences" not in kept["metadata"]


def test_a_job_no_asset_owns_is_counted_in_its_namespace_only() -> None:
    assert set(indexes.job_entry("media", _job("distribute-1", None))) == {"media"}


def test_an_asset_is_kept_with_the_ladder_and_the_policy_it_names_and_its_phase() -> None:
    body = {"spec": {"ladderRef": {"name": "ott"}, "archivePolicyRef": {"name": "321"}},
            "status": {"phase": "Ready"}}
    [entry] = indexes.asset_entry("media", "clip", body).values()
    assert entry.refs == (("ladderRef", "ott"), ("archivePolicyRef", "321")) and entry.phase == "Ready"
    [bare] = indexes.asset_entry("media", "bare", {"spec": {}}).values()
    assert bare.refs == () and bare.phase is None
    watched = _watched(assets={"media": [entry, bare]})
    assert watched.namespace_assets("media") == [{"metadata": {"name": "clip"}, "status": {"phase": "Ready"}},
                                                 {"metadata": {"name": "bare"}, "status": {}}]


def _asset_naming(name: str, ladder: str) -> indexes.AssetEntry:
    return indexes.asset_entry("media", name, {"spec": {"ladderRef": {"name": ladder}}})["media"]


def test_reads_come_from_the_indexes() -> None:
    window = indexes.window_entry("media", "w1", {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
                                                  "spec": {"territories": ["NO"]}})["media"]
    job = indexes.job_entry("media", _job("clip-ingest-1", ASSET_UID))
    watched = _watched(ladders={("media", "ott"): [{"renditions": []}]},
                       windows={"media": [window]},
                       jobs={k: [v] for k, v in job.items()},
                       assets={"media": [_asset_naming(name, ref) for name, ref in (("b", "ott"), ("a", "ott"),
                                                                                    ("c", "other"))]})
    assert watched.ladder("media", "ott") == {"renditions": []}
    assert watched.ladder("media", "other") is None
    assert watched.policy("media", "321") is None
    assert watched.namespace_windows("media") == [
        {"metadata": {"name": "w1", "deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"territories": ["NO"]}}]
    assert [j["metadata"]["name"] for j in watched.owned_jobs("media", ASSET_UID)] == ["clip-ingest-1"]
    assert watched.owned_jobs("media", "another-uid") == []
    assert watched.assets_referencing("media", "ladderRef", "ott") == ["a", "b"]
    assert watched.assets_referencing("media", "archivePolicyRef", "ott") == []


def test_a_finished_jobs_result_is_read_once_and_an_absent_one_again() -> None:
    results = indexes.JobResults(capacity=2)
    reads: list[str] = []

    def read(message: str | None) -> Any:
        def inner() -> str | None:
            reads.append("read")
            return message
        return inner

    assert results.get("u1", read(None)) is None  # the pod's status not written yet
    assert results.get("u1", read('{"ok": true}')) == '{"ok": true}'
    assert results.get("u1", read("not read")) == '{"ok": true}'
    assert len(reads) == 2
    results.get("u2", read("2"))
    results.get("u3", read("3"))  # over capacity: the oldest (u1) goes, and is read again when asked
    assert results.get("u1", read("again")) == "again"


def _asset(reason: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": "clip", "namespace": "media", "uid": ASSET_UID},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": reason}], "jobs": jobs}}


def test_an_asset_waits_on_its_jobs_only_while_the_index_holds_them_as_its_status_records_them() -> None:
    """The asset clock's look at an asset from its watch event: one waiting for Jobs the index holds as its
    status records them is looked at WAITING_FACTOR times later than one that may need the operator."""
    from kubemam.config import OperatorConfig
    from kubemam.controllers.asset import next_recheck
    from kubemam.plan.recheck import WAITING_FACTOR

    config = OperatorConfig(recheck_seconds=60)
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    waiting, soon = now + timedelta(seconds=60 * WAITING_FACTOR), now + timedelta(seconds=60)
    queued = indexes.job_entry("media", _job("clip-ingest-1", ASSET_UID))
    watched = _watched(jobs={k: [v] for k, v in queued.items()})
    pending = {"name": "clip-ingest-1", "step": "ingest", "state": "Pending"}
    assert next_recheck(watched, _asset("IngestPending", [pending]), config, now) == waiting
    # The Job is running now, but the asset's status has not caught up: re-check it.
    assert next_recheck(watched, _asset("IngestPending", [{**pending, "state": "Running"}]), config, now) == soon
    # Deleted (or its event missed): not in the index.
    assert next_recheck(_watched(), _asset("IngestPending", [pending]), config, now) == soon
    # A failed Job's retry may come due; a missing Secret is no Job's event.
    assert next_recheck(watched, _asset("IngestPending", [pending, {**pending, "name": "x", "state": "Failed"}]),
                        config, now) == soon
    assert next_recheck(watched, _asset("S3SecretMissing", [pending]), config, now) == soon
    assert next_recheck(watched, _asset("IngestPending", []), config, now) == soon


def test_only_a_change_the_planner_sees_reconciles_a_jobs_owner() -> None:
    from kubemam.plan.jobstate import observe_job

    seen = indexes.JobTransitions(capacity=2)
    pending = _job("clip-ingest-1", ASSET_UID)
    refused_again = _job("clip-ingest-1", ASSET_UID, terminating=0)  # the Job controller wrote its status again
    running = _job("clip-ingest-1", ASSET_UID, active=1)
    assert seen.changed("uid-1", observe_job(pending))  # never seen: reconcile
    seen.record("uid-1", observe_job(pending))
    assert not seen.changed("uid-1", observe_job(refused_again))
    assert seen.changed("uid-1", observe_job(running))
    seen.forget("uid-1")  # deleted
    assert seen.changed("uid-1", observe_job(pending))
    for uid in ("uid-1", "uid-2", "uid-3"):
        seen.record(uid, observe_job(pending))
    assert seen.changed("uid-1", observe_job(pending))  # the oldest went first: one more reconcile, no harm
    assert not seen.changed("uid-3", observe_job(pending))


def test_a_job_made_by_a_reconcile_looks_to_its_first_event_as_already_seen() -> None:
    """The Job the API server answers a create with, and the same Job in its first watch event (the Job
    controller has set a start time by then), are one view: that event reconciles nothing."""
    seen = indexes.JobTransitions()
    created = _job("clip-ingest-1", ASSET_UID)
    first_event = _job("clip-ingest-1", ASSET_UID, startTime="2026-12-01T04:00:00Z", ready=0, terminating=0)
    seen.record("uid-1", indexes.job_view(created))
    assert not seen.changed("uid-1", indexes.job_view(first_event))
    deleting = {**first_event, "metadata": {**first_event["metadata"], "deletionTimestamp": "2026-12-01T04:01:00Z"}}
    assert seen.changed("uid-1", indexes.job_view(deleting))


def test_only_the_assets_that_found_a_reference_missing_wait_for_it() -> None:
    waiting = indexes.WaitingReferences()
    ladders: dict[str, dict[str, Any]] = {}
    for asset in ("a", "b"):
        assert waiting.resolve("media", "ladderRef", "ott", asset, lambda: ladders.get("ott")) is None
    ladders["ott"] = {"renditions": []}
    # "b" planned again after the ladder appeared, before the ladder's handler ran: it waits no more.
    assert waiting.resolve("media", "ladderRef", "ott", "b", lambda: ladders.get("ott")) == {"renditions": []}
    assert waiting.resolve("media", "archivePolicyRef", "ott", "c", lambda: None) is None  # another field
    assert waiting.take("media", "ladderRef", "ott") == ["a"]
    assert waiting.take("media", "ladderRef", "ott") == []  # taken once: a reconcile notes it again if need be
    assert waiting.take("media", "archivePolicyRef", "ott") == ["c"]
    # Deleted while "a" and "d" named it (or their reconcile failed): made again, it reaches them.
    waiting.note("media", "ladderRef", "ott", ["d", "a"])
    waiting.note("media", "ladderRef", "ott", [])
    assert waiting.take("media", "ladderRef", "ott") == ["a", "d"]



def _rights_body(name: str, version: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "media", "resourceVersion": version, "generation": 3,
                         "labels": {"series": "coastal"}, "managedFields": [{"manager": "kubectl"}] * 20},
            "spec": {"source": {"uri": "s3://lib/a.mov"}, "descriptive": {"synopsis": "x" * 5000}},
            "status": {"phase": "Ready", "technical": {"sizeBytes": 1}, "qc": {"verdict": "Passed"}, **status}}


def test_the_rights_index_keeps_what_the_rights_planner_reads_and_nothing_else() -> None:
    body = _rights_body("ep1", "41", distribution=[{"target": "svod-no", "state": "Published"}],
                  packages=[{"format": "dash", "manifestUri": "s3://lib/p/manifest.mpd"}])
    [(namespace, entry)] = indexes.asset_entry("media", "ep1", body).items()
    assert namespace == "media" and len(entry.rights) < 400  # no spec, no managedFields
    seen = _watched(assets={"media": [entry]}).rights_assets("media")
    assert seen == [{"metadata": {"name": "ep1", "resourceVersion": "41", "labels": {"series": "coastal"},
                                  "generation": 3, "finalizers": []},
                     "status": {"qc": {"verdict": "Passed"}, "packages": body["status"]["packages"],
                                "distribution": body["status"]["distribution"]}}]
    going = {**body, "metadata": {**body["metadata"], "deletionTimestamp": "2027-01-01T00:00:00Z"}}
    [entry] = indexes.asset_entry("media", "ep1", going).values()
    assert indexes.rights_asset(entry)["metadata"]["deletionTimestamp"] == "2027-01-01T00:00:00Z"
    # Whether it holds the finalizer: the rights reconcile puts it on before publishing an asset without it.
    held = {**body, "metadata": {**body["metadata"], "finalizers": ["kubemam.io/finalizer"]}}
    [entry] = indexes.asset_entry("media", "ep1", held).values()
    assert indexes.rights_asset(entry)["metadata"]["finalizers"] == ["kubemam.io/finalizer"]


class _Lister:
    """The API server's LIST, counted (the index is what spares it)."""

    def __init__(self, bodies: list[dict[str, Any]]) -> None:
        self.bodies, self.calls = bodies, 0

    def list_objects(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        self.calls += 1
        return self.bodies


def test_the_rights_gather_reads_the_index_once_it_holds_this_operators_own_writes() -> None:
    from kubemam.controllers.rights import AssetSource

    source = AssetSource()
    source.CATCH_UP_SECONDS = 0.2
    api = _Lister([_rights_body("ep1", "50")])
    assert source.assets(api, "media") == api.bodies and api.calls == 1  # no index yet (Kopf not ready)
    index: dict[str, list[dict[str, Any]]] = {"media": [_rights_body("ep1", "50")]}
    source.use(lambda namespace: index.get(namespace, []))
    assert source.assets(api, "media") == index["media"] and api.calls == 1
    # A status this operator wrote (version 52) that the watch has not brought yet: not the stale copy.
    source.wrote("media", "ep1", "52")
    assert source.assets(api, "media") == api.bodies and api.calls == 2
    source.wrote("media", "ep1", "52")
    index["media"] = [_rights_body("ep1", "53")]  # ours, and someone's later write
    assert source.assets(api, "media") == index["media"] and api.calls == 2
    source.wrote("media", "ep1", "60")
    index["media"] = []  # deleted since
    assert source.assets(api, "media") == [] and api.calls == 2
    source.wrote("media", "ep1", "abc")  # not etcd's numbers: only the very version counts
    index["media"] = [_rights_body("ep1", "abd")]
    assert source.assets(api, "media") == api.bodies and api.calls == 3
    # A guarded write lost to a newer asset than the index showed: the next gather LISTs, once.
    index["media"] = [_rights_body("ep1", "70")]
    source.distrust("media")
    assert source.assets(api, "media") == api.bodies and api.calls == 4
    assert source.assets(api, "media") == index["media"] and api.calls == 4
