"""The aimed clock (controllers/clock.py) keyed by asset: one alarm per key, dropped keys forgotten, a heap that
does not grow with re-aims, and heartbeats under the instance's own names. Real threads, real time in tenths of
a second (the pool, backoff and pokes are tested through the rights clock in test_rights_clock.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from kubemam.controllers.clock import COMPACT_MIN, AimedClock
from kubemam.health import Heartbeats


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _wait(probe: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture()
def clocks() -> Iterator[list[AimedClock]]:
    made: list[AimedClock] = []
    yield made
    for clock in made:
        clock.stop()


def _archive_clock(callback: Callable[[str], datetime | None], beats: Heartbeats | None = None,
                   stuck: float = 300.0) -> AimedClock:
    return AimedClock(callback, name="archive", clock_heartbeat="archive clock", worker_heartbeat="archive reconcile",
                      workers=2, stuck_seconds=stuck, heartbeats=beats or Heartbeats())


def test_each_asset_is_woken_at_its_own_instant_and_keeps_the_earliest_alarm(clocks: list[AimedClock]) -> None:
    ran: dict[str, float] = {}
    clocks.append(clock := _archive_clock(lambda key: ran.setdefault(key, time.time()) and None))
    soon, later = time.time() + 0.2, time.time() + 0.4
    clock.aim("media/ep2", datetime.fromtimestamp(later, UTC))
    clock.aim("media/ep1", datetime.fromtimestamp(soon, UTC))
    clock.aim("media/ep1", _in(5))  # a later wake does not postpone the earlier alarm
    assert clock.alarm("media/ep1") == datetime.fromtimestamp(soon, UTC)
    clock.aim("media/ep3", None)  # nothing time-driven: no alarm
    assert clock.alarm("media/ep3") is None
    _wait(lambda: len(ran) == 2)
    assert 0 <= ran["media/ep1"] - soon < 0.2 and 0 <= ran["media/ep2"] - later < 0.2
    time.sleep(0.1)
    assert "media/ep3" not in ran and clock.alarm("media/ep1") is None


def test_a_dropped_asset_is_not_woken(clocks: list[AimedClock]) -> None:
    ran: list[str] = []
    clocks.append(clock := _archive_clock(lambda key: ran.append(key) and None))
    clock.aim("media/gone", _in(0.2))
    clock.aim("media/kept", _in(0.2))
    clock.drop("media/gone")
    assert clock.alarm("media/gone") is None
    _wait(lambda: "media/kept" in ran)
    time.sleep(0.1)
    assert ran == ["media/kept"]


def test_re_aiming_many_assets_does_not_grow_the_heap_past_its_live_alarms(clocks: list[AimedClock]) -> None:
    clocks.append(clock := _archive_clock(lambda key: None))
    keys = [f"media/ep{n}" for n in range(500)]
    for round_ in range(20):  # every asset re-aimed earlier, again and again (each reconcile aims it)
        for key in keys:
            clock.aim(key, _in(3600 - round_))
    for key in keys[:400]:
        clock.drop(key)
    heap = clock._heap  # the clock's own bound, checked from outside
    assert len(heap) <= 2 * 100 + COMPACT_MIN + 1
    assert sorted(k for _, k in heap if clock.alarm(k) is not None) == sorted(keys[400:])


def test_the_archive_clock_beats_and_times_its_runs_under_its_own_names(clocks: list[AimedClock]) -> None:
    beats = Heartbeats()
    release = threading.Event()

    def reconcile(key: str) -> datetime | None:
        release.wait(10)
        return None

    clocks.append(clock := _archive_clock(reconcile, beats, stuck=0.2))
    clock.poke("media/ep1")
    _wait(lambda: beats.running("archive reconcile media/ep1"))
    assert beats.running("archive clock") and not beats.running("rights clock")
    # A hung run is stuck for the liveness probe once past its limit (the idle clock loop may be too: its
    # limit here is shorter than its beat).
    _wait(lambda: "archive reconcile media/ep1" in [s.name for s in beats.stale()])
    release.set()
    _wait(lambda: not beats.running("archive reconcile media/ep1"))
    assert "archive reconcile media/ep1" not in [s.name for s in beats.stale()]
