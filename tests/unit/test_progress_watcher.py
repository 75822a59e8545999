"""The progress loop (controllers/progress.py): which running steps it reads, and when an asset is reconciled.

The log reads and reconciles are the loop's two edges (the API server's pods/log, the asset controller);
here they are recorded, and the Jobs come from the index entries the operator really keeps (job_entry)."""

from __future__ import annotations

from typing import Any

from kubemam.controllers import indexes
from kubemam.controllers.indexes import RunningStep
from kubemam.controllers.progress import WAITING_RECHECK_SECONDS, ProgressWatcher, due
from kubemam.media.progress import progress_line


def _job(name: str, asset: str, owner_uid: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "media", "uid": f"uid-{name}",
                         "labels": {"kubemam.io/step": "transcode", "kubemam.io/asset": asset},
                         "ownerReferences": [{"kind": "MediaAsset", "name": asset, "uid": owner_uid,
                                              "controller": True}]},
            "spec": {}, "status": status}


def _index(*jobs: dict[str, Any]) -> dict[Any, list[dict[str, Any]]]:
    """What Kopf's index holds: every job_entry's values under their keys."""
    index: dict[Any, list[dict[str, Any]]] = {}
    for job in jobs:
        for key, value in indexes.job_entry("media", job).items():
            index.setdefault(key, []).append(value)
    return index


def _watched(index: dict[Any, list[dict[str, Any]]]) -> indexes.Watched:
    return indexes.Watched(ladders={}, policies={}, windows={}, jobs=index)


def test_each_asset_with_a_running_step_is_read_through_its_first_running_job() -> None:
    index = _index(_job("clip-transcode-b", "clip", "u1", active=1), _job("clip-transcode-a", "clip", "u1", active=1),
                   _job("clip-ingest", "clip", "u1", succeeded=1,
                        conditions=[{"type": "Complete", "status": "True"}]),
                   _job("queued-ingest", "queued", "u2"),  # no pod yet: Pending, nothing to read
                   _job("other-package", "other", "u3", active=1))
    assert sorted(_watched(index).running_steps(), key=lambda s: s.asset) == [
        RunningStep("media", "clip", "clip-transcode-a"), RunningStep("media", "other", "other-package")]


def _report(percent: int, step: str = "transcode") -> dict[str, Any]:
    return {"step": step, "percent": percent, "fps": 25.0, "etaSeconds": 10}


def test_a_reconcile_is_due_when_what_the_planner_would_write_moves_on() -> None:
    from kubemam.controllers.progress import _Seen

    assert due(None, None, 0.0)  # first sight: the step name and 0 %
    seen = _Seen(_report(10), reconciled_at=100.0, read_at=100.0)
    assert not due(seen, _report(10), 200.0)  # nothing new
    assert not due(seen, _report(12), 102.0)  # a small move soon after: the planner would not write it
    assert due(seen, _report(15), 102.0)  # 5 %
    assert due(seen, _report(11), 110.0)  # any move after 10 s
    assert due(seen, _report(10, "package"), 101.0)  # another step
    assert not due(seen, None, 100.0 + WAITING_RECHECK_SECONDS - 1)  # no running pod: why it waits, every 10 s
    assert due(seen, None, 100.0 + WAITING_RECHECK_SECONDS)


class _Node:
    """The two edges: each running Job's log, and the reconciles asked for."""

    def __init__(self, steps: list[RunningStep]) -> None:
        self.steps = steps
        self.percent: dict[str, int] = {s.job: 0 for s in steps}
        self.reads: list[str] = []
        self.reconciled: list[tuple[str, str]] = []
        self.failing: set[str] = set()

    def tail(self, namespace: str, job: str) -> str | None:
        self.reads.append(job)
        return f"starting\n{progress_line('transcode', self.percent[job], 25.0, 10)}\n"

    def reconcile(self, namespace: str, asset: str) -> None:
        if asset in self.failing:
            raise TimeoutError("read timed out")
        self.reconciled.append((namespace, asset))


def _watcher(node: _Node, reads_per_turn: int) -> ProgressWatcher:
    return ProgressWatcher(lambda: list(node.steps), node.tail, node.reconcile, reads_per_turn=reads_per_turn)


def test_a_thousand_running_steps_are_read_in_turn_within_the_budget() -> None:
    node = _Node([RunningStep("media", f"a{n:04d}", f"a{n:04d}-transcode") for n in range(1_000)])
    watcher = _watcher(node, reads_per_turn=50)
    for turn in range(20):
        watcher.tick(turn * 2.0)
    assert len(node.reads) == 1_000  # 50 a turn, never more
    assert sorted(node.reads) == sorted(s.job for s in node.steps)  # every step read once, none twice
    assert len(node.reconciled) == 1_000  # each first sight writes the step's name and 0 %
    for turn in range(20, 40):  # nothing moved: read again in turn, nothing reconciled
        watcher.tick(turn * 2.0)
    assert len(node.reads) == 2_000 and len(node.reconciled) == 1_000


def test_only_moved_progress_is_reconciled_and_finished_steps_are_forgotten() -> None:
    node = _Node([RunningStep("media", "a", "a-transcode"), RunningStep("media", "b", "b-transcode")])
    watcher = _watcher(node, reads_per_turn=10)
    assert len(watcher.tick(0.0)) == 2
    node.percent["a-transcode"] = 40
    assert watcher.tick(2.0) == [RunningStep("media", "a", "a-transcode")]
    node.steps = [RunningStep("media", "a", "a-transcode")]  # b finished: its Job's events reconcile it
    watcher.tick(4.0)
    node.steps.append(RunningStep("media", "b", "b-transcode"))  # b runs again (a retry): seen afresh
    assert watcher.tick(6.0) == [RunningStep("media", "b", "b-transcode")]


def test_one_failing_reconcile_does_not_stop_the_others_and_is_tried_again() -> None:
    node = _Node([RunningStep("media", "a", "a-transcode"), RunningStep("media", "b", "b-transcode")])
    node.failing.add("a")
    watcher = _watcher(node, reads_per_turn=10)
    assert watcher.tick(0.0) == [RunningStep("media", "b", "b-transcode")]
    node.failing.clear()
    assert watcher.tick(2.0) == [RunningStep("media", "a", "a-transcode")]  # its progress was never written
