"""The operator's metrics, pure: what a Job, an asset's status or a listing turns into."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from kubemam import metrics

T0 = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _job(uid: str = "u1", step: str = "ingest", state: str = "Complete", started: datetime | None = T0,
         finished: datetime | None = T0 + timedelta(seconds=42), **status: Any) -> dict[str, Any]:
    conditions = []
    if state in ("Complete", "Failed") and finished is not None:
        conditions.append({"type": state, "status": "True", "lastTransitionTime": _stamp(finished)})
    body: dict[str, Any] = {"metadata": {"name": f"a-{step}-1", "uid": uid, "labels": {"kubemam.io/step": step}},
                            "spec": {}, "status": {"conditions": conditions, **status}}
    if started is not None:
        body["status"]["startTime"] = _stamp(started)
    if state == "Complete" and finished is not None:
        body["status"]["completionTime"] = _stamp(finished)
    return body


def test_a_finished_job_runs_from_its_start_to_its_completion_or_failure() -> None:
    done = metrics.job_finish(_job())
    assert done == metrics.JobFinish("u1", "ingest", "succeeded", T0 + timedelta(seconds=42), 42.0)
    failed = metrics.job_finish(_job(state="Failed", step="transcode", finished=T0 + timedelta(minutes=3)))
    assert failed is not None and (failed.outcome, failed.step, failed.duration_seconds) == ("failed", "transcode", 180)
    never_started = metrics.job_finish(_job(state="Failed", started=None))
    assert never_started is not None and never_started.duration_seconds is None
    assert metrics.job_finish(_job(state="Running", finished=None, active=1)) is None


def test_each_job_is_counted_once_and_not_when_it_finished_before_the_operator_started() -> None:
    counter = metrics.JobCounter(since=T0 + timedelta(seconds=10))
    before = _value("kubemam_jobs_total", step="migrate", outcome="succeeded")
    histogram = _value("kubemam_job_duration_seconds_count", step="migrate", outcome="succeeded")
    assert counter.observe(_job("a", step="migrate")) is not None
    assert counter.observe(_job("a", step="migrate")) is None  # the same Job again (another event, a resume)
    assert counter.observe(_job("old", step="migrate", finished=T0 + timedelta(seconds=5))) is None  # before start
    assert counter.observe(_job("b", step="migrate", state="Running", finished=None, active=1)) is None
    assert _value("kubemam_jobs_total", step="migrate", outcome="succeeded") == before + 1
    assert _value("kubemam_job_duration_seconds_count", step="migrate", outcome="succeeded") == histogram + 1
    assert _value("kubemam_job_duration_seconds_sum", step="migrate", outcome="succeeded") >= 42
    # A step label the registry does not know is counted as "unknown": the label's values stay bounded.
    assert metrics.job_step(_job("c", step="no-such-step")) == "unknown"


def test_remembered_uids_are_bounded() -> None:
    once = metrics.Once(capacity=3)
    assert all(once.first(k) for k in "abcd")
    assert len(once) == 3 and "a" not in once and not once.first("d")


def test_a_job_is_queued_while_suspended_or_without_a_ready_pod() -> None:
    suspended = _job(state="Pending", finished=None, started=None)
    suspended["spec"]["suspend"] = True
    assert metrics.job_queued(suspended)
    assert metrics.job_queued(_job(state="Pending", finished=None, active=1, ready=0))
    assert metrics.job_queued(_job(state="Pending", finished=None, started=None))  # no pod created yet
    assert not metrics.job_queued(_job(state="Running", finished=None, active=1, ready=1))
    assert not metrics.job_queued(_job())
    counts = metrics.queued_by_step([suspended, _job(step="transcode", state="Running", finished=None, active=1,
                                                     ready=1), _job(uid="x")])
    assert counts == {"ingest": 1, "transcode": 0}


def _qc_status(verdict: str = "Failed", lufs: float | None = -30.5, checked: datetime = T0,
               issues: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"jobs": [{"step": "ingest", "name": "clip-ingest-1a2b3c4d", "inputHash": "h", "state": "Succeeded"}],
            "qc": {"verdict": verdict, "checkedAt": _stamp(checked), "loudness": {"integratedLufs": lufs},
                   "issues": issues if issues is not None else [
                       {"check": "loudness", "severity": "error", "message": "too quiet"},
                       {"check": "truePeak", "severity": "error", "message": "too loud"},
                       {"check": "loudness", "severity": "error", "message": "again"},
                       {"check": "black", "severity": "warning", "message": "black"}]}}


def test_qc_failures_are_the_failed_checks_and_the_loudness_deviation_from_the_policy_target() -> None:
    outcome = metrics.qc_outcome("ns", "clip", _qc_status(), target_lufs=-23.0, since=T0)
    assert outcome is not None
    assert outcome.failed_checks == ("loudness", "truePeak")  # once per check, warnings are not failures
    assert outcome.deviation_lu == pytest.approx(7.5)
    assert outcome.key == ("ns", "clip", "clip-ingest-1a2b3c4d", _stamp(T0))
    passed = metrics.qc_outcome("ns", "clip", _qc_status("Warning", lufs=-23.4, issues=[
        {"check": "freeze", "severity": "warning", "message": "still"}]), target_lufs=-23.0, since=T0)
    assert passed is not None and passed.failed_checks == () and passed.deviation_lu == pytest.approx(0.4)
    odd = metrics.qc_outcome("ns", "clip", _qc_status(issues=[], lufs=None), -23.0, since=T0)
    assert odd is not None and odd.failed_checks == ("unknown",) and odd.deviation_lu is None
    assert metrics.qc_outcome("ns", "clip", {"jobs": []}, -23.0, since=T0) is None


def test_the_loudness_target_is_the_assets_policy_else_the_ladders_else_ebu_r128() -> None:
    assert metrics.qc_target({"qc": {"targetLufs": -16}}, {"qc": {"targetLufs": -24}}) == -16.0
    assert metrics.qc_target({"source": {}}, {"qc": {"targetLufs": -24}}) == -24.0
    assert metrics.qc_target({}, None) == -23.0


def test_each_ingest_result_is_counted_once_and_not_when_checked_before_the_operator_started() -> None:
    counter = metrics.QCCounter(since=T0)
    namespace = "unit-qc"
    loudness = _value("kubemam_qc_failures_total", namespace=namespace, check="loudness")
    deviations = _value("kubemam_loudness_deviation_lu_count")
    status = _qc_status(checked=T0 + timedelta(seconds=1))
    assert counter.pending(namespace, "clip", status)
    assert counter.observe(namespace, "clip", status, -23.0) is not None
    assert not counter.pending(namespace, "clip", status)
    assert counter.observe(namespace, "clip", status, -23.0) is None  # the next status event
    assert counter.observe(namespace, "old", _qc_status(checked=T0 - timedelta(seconds=1)), -23.0) is None
    # A new ingest (new master, new Job) is a new result.
    again = _qc_status(checked=T0 + timedelta(minutes=5))
    again["jobs"][0]["name"] = "clip-ingest-99999999"
    assert counter.observe(namespace, "clip", again, -23.0) is not None
    assert _value("kubemam_qc_failures_total", namespace=namespace, check="loudness") == loudness + 2
    assert _value("kubemam_qc_failures_total", namespace=namespace, check="truePeak") >= 2
    assert _value("kubemam_loudness_deviation_lu_count") == deviations + 2


def test_running_step_gauges_follow_the_progress_and_vanish_when_the_step_ends() -> None:
    series = metrics.StepProgress()
    running = {"jobs": [{"step": "transcode", "name": "j", "inputHash": "h", "state": "Running"}],
               "progress": {"step": "transcode", "percent": 50, "fps": 42.5}}
    assert metrics.step_progress(running) == ("transcode", 0.5, 42.5)
    assert metrics.step_progress({**running, "jobs": []}) is None
    labels = {"namespace": "unit-p", "asset": "clip", "step": "transcode"}
    series.observe("unit-p", "clip", running)
    assert REGISTRY.get_sample_value("kubemam_step_progress_ratio", labels) == 0.5
    assert REGISTRY.get_sample_value("kubemam_step_fps", labels) == 42.5
    series.observe("unit-p", "clip", {**running, "progress": {"step": "package", "percent": 10}})
    assert REGISTRY.get_sample_value("kubemam_step_progress_ratio", labels) is None  # the old step's series went
    assert REGISTRY.get_sample_value("kubemam_step_progress_ratio", {**labels, "step": "package"}) == 0.1
    assert REGISTRY.get_sample_value("kubemam_step_fps", {**labels, "step": "package"}) is None
    series.observe("unit-p", "clip", {"jobs": [], "progress": {"step": "package", "percent": 100}})
    assert REGISTRY.get_sample_value("kubemam_step_progress_ratio", {**labels, "step": "package"}) is None
    series.observe("unit-p", "gone", running)
    series.keep_only("unit-p", ["clip"])  # the asset was deleted while no event arrived
    assert REGISTRY.get_sample_value("kubemam_step_progress_ratio", {**labels, "asset": "gone"}) is None


def _window(start: datetime, end: datetime, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "w"}
    if deleting:
        meta["deletionTimestamp"] = _stamp(start)
    return {"metadata": meta, "spec": {"start": _stamp(start), "end": _stamp(end)}}


def test_windows_open_now_and_closing_within_a_day() -> None:
    windows = [_window(T0 - timedelta(days=1), T0 + timedelta(hours=2)),   # open, closing
               _window(T0, T0 + timedelta(days=30)),                        # opens this instant
               _window(T0 - timedelta(days=2), T0),                         # ended this instant
               _window(T0 + timedelta(hours=1), T0 + timedelta(hours=3)),   # scheduled
               _window(T0 - timedelta(hours=1), T0 + timedelta(hours=1), deleting=True)]
    assert metrics.window_counts(windows, T0) == (2, 1)


def test_asset_phases_count_every_phase_and_no_status_as_pending() -> None:
    counts = metrics.asset_phases([{"status": {"phase": "Ready"}}, {"status": {"phase": "Ready"}}, {}])
    assert counts["Ready"] == 2 and counts["Pending"] == 1 and counts["Failed"] == 0
    assert set(metrics.PHASES) <= set(counts)


def test_the_inventory_removes_namespaces_that_vanish() -> None:
    inventory = metrics.Inventory()
    ready = {"metadata": {"name": "a"}, "status": {"phase": "Ready"}}
    inventory.publish({"unit-a": [ready], "unit-b": [ready]},
                      {"unit-a": [_window(T0 - timedelta(hours=1), T0 + timedelta(hours=1))]},
                      [_job(step="purge", state="Pending", finished=None, started=None)], T0)
    assert REGISTRY.get_sample_value("kubemam_assets", {"namespace": "unit-b", "phase": "Ready"}) == 1
    assert REGISTRY.get_sample_value("kubemam_assets", {"namespace": "unit-b", "phase": "Failed"}) == 0
    assert REGISTRY.get_sample_value("kubemam_rights_windows_open", {"namespace": "unit-a"}) == 1
    assert REGISTRY.get_sample_value("kubemam_rights_windows_closing_24h", {"namespace": "unit-a"}) == 1
    assert REGISTRY.get_sample_value("kubemam_jobs_queued", {"step": "purge"}) == 1
    inventory.publish({"unit-a": [ready], "unit-b": []}, {"unit-a": []}, [], T0)
    assert REGISTRY.get_sample_value("kubemam_assets", {"namespace": "unit-b", "phase": "Ready"}) is None
    assert REGISTRY.get_sample_value("kubemam_rights_windows_open", {"namespace": "unit-a"}) is None
    assert REGISTRY.get_sample_value("kubemam_jobs_queued", {"step": "purge"}) is None
    assert REGISTRY.get_sample_value("kubemam_assets", {"namespace": "unit-a", "phase": "Ready"}) == 1


def test_reconciled_counts_outcomes_times_runs_and_keeps_the_handler() -> None:
    @metrics.reconciled("UnitKind")
    def handler(namespace: str, fail: bool = False, **_: Any) -> str:
        if fail:
            raise RuntimeError("boom")
        return namespace

    @metrics.reconciled("UnitKind")
    async def async_handler(**_: Any) -> int:
        return 7

    assert handler.__name__ == "handler"
    assert handler(namespace="unit-ns") == "unit-ns"
    with pytest.raises(RuntimeError):
        handler(namespace="unit-ns", fail=True)
    assert asyncio.run(async_handler()) == 7
    assert _value("kubemam_reconcile_total", kind="UnitKind", outcome="success") == 2
    assert _value("kubemam_reconcile_total", kind="UnitKind", outcome="error") == 1
    assert _value("kubemam_reconcile_duration_seconds_count", kind="UnitKind") == 3
    assert "unit-ns" in metrics.seen_namespaces()
    metrics.reconciled("UnitKind")(lambda namespace: None)("unit-positional")  # the rights clock's callback
    assert "unit-positional" in metrics.seen_namespaces()


def test_the_sweep_counts_seen_namespaces_from_the_indexes_and_forgets_empty_ones() -> None:
    from kubemam.controllers import indexes, telemetry

    metrics.note_namespace("unit-sweep-full")
    metrics.note_namespace("unit-sweep-empty")
    asset = {"metadata": {"name": "a", "namespace": "unit-sweep-full"}, "status": {"phase": "Ready"}}
    window = _window(T0 - timedelta(hours=1), T0 + timedelta(days=2))
    job = _job(step="fixity", state="Pending", finished=None, started=None)
    # What the index functions keep of each object, in Kopf's shape (key -> the values of every object).
    watched = indexes.Watched(
        ladders={}, policies={},
        windows={"unit-sweep-full": [indexes.window_entry("unit-sweep-full", "w", window)["unit-sweep-full"]]},
        jobs={"unit-sweep-full": list(indexes.job_entry("unit-sweep-full", job).values())},
        assets={"unit-sweep-full": [indexes.asset_entry("unit-sweep-full", "a", asset)["unit-sweep-full"]]})
    telemetry.sweep(watched, T0)
    assert REGISTRY.get_sample_value("kubemam_assets", {"namespace": "unit-sweep-full", "phase": "Ready"}) == 1
    assert REGISTRY.get_sample_value("kubemam_rights_windows_open", {"namespace": "unit-sweep-full"}) == 1
    assert REGISTRY.get_sample_value("kubemam_rights_windows_closing_24h", {"namespace": "unit-sweep-full"}) == 0
    assert REGISTRY.get_sample_value("kubemam_jobs_queued", {"step": "fixity"}) == 1
    assert "unit-sweep-empty" not in metrics.seen_namespaces()
    assert "unit-sweep-full" in metrics.seen_namespaces()


def test_an_asset_event_counts_qc_once_against_the_ladders_target() -> None:
    from kubemam.controllers import telemetry
    from kubemam.controllers.indexes import Watched

    watched = Watched(ladders={("unit-event", "loud"): [{"qc": {"targetLufs": -16}}]}, policies={}, windows={},
                      jobs={})
    status = _qc_status(lufs=-20.0, checked=datetime.now(UTC) + timedelta(seconds=1))
    body = {"metadata": {"name": "clip", "namespace": "unit-event"}, "spec": {"ladderRef": {"name": "loud"}},
            "status": status}
    deviations = _value("kubemam_loudness_deviation_lu_sum")
    telemetry.asset_event(watched, "MODIFIED", body)
    telemetry.asset_event(watched, "MODIFIED", body)  # the same result again: counted once
    assert _value("kubemam_loudness_deviation_lu_sum") == pytest.approx(deviations + 4.0)
    assert _value("kubemam_qc_failures_total", namespace="unit-event", check="loudness") == 1
