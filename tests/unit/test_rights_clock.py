"""The aimed clocks (controllers/clock.py): the rights clock's pool and backoff, the archive clock's alarms per
asset, and the heartbeats the liveness probe judges.

The clock runs real threads, so these tests use real time in tenths of a second (with margins for a
busy machine); the staleness judgment itself is pure and takes an injected clock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import kopf
import pytest

from kubemam import health
from kubemam.controllers.clock import COMPACT_MIN, AimedClock
from kubemam.controllers.rights import CLOCK_HEARTBEAT, WORKER_HEARTBEAT, RightsClock, retry_delay
from kubemam.controllers.telemetry import INVENTORY_HEARTBEAT, InventoryLoop
from kubemam.health import Heartbeats, Stale


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


def test_a_blocked_namespace_does_not_delay_another(clocks: list[RightsClock]) -> None:
    release = threading.Event()
    ran: dict[str, float] = {}
    beats = Heartbeats()

    def reconcile(namespace: str) -> datetime | None:
        ran.setdefault(namespace, time.time())
        if namespace == "stuck":
            release.wait(10)  # a reconcile hung on an API call
        return None

    clocks.append(clock := RightsClock(reconcile, workers=2, stuck_seconds=0.2, heartbeats=beats))
    clock.poke("stuck")
    _wait(lambda: "stuck" in ran)
    due = time.time() + 0.3
    clock.aim("on-time", datetime.fromtimestamp(due, UTC))  # a window closing in 0.3 s
    _wait(lambda: "on-time" in ran)
    assert -0.01 <= ran["on-time"] - due < 0.25, "the other namespace's transition was not met on time"
    assert not release.is_set()
    # The hung run is stuck for the liveness probe once it has run past its limit; nothing else is.
    _wait(lambda: bool(beats.stale()))
    assert [s.name for s in beats.stale()] == [f"{WORKER_HEARTBEAT} stuck"]
    release.set()
    _wait(lambda: not beats.running(f"{WORKER_HEARTBEAT} stuck"))
    assert beats.stale() == []
    assert beats.running(CLOCK_HEARTBEAT)


def test_every_worker_busy_queues_the_next_namespace_until_one_is_free(clocks: list[RightsClock]) -> None:
    release = threading.Event()
    ran: list[str] = []

    def reconcile(namespace: str) -> datetime | None:
        ran.append(namespace)
        if namespace.startswith("slow"):
            release.wait(10)
        return None

    clocks.append(clock := RightsClock(reconcile, workers=2, heartbeats=Heartbeats()))
    clock.poke("slow-1")
    clock.poke("slow-2")
    _wait(lambda: len(ran) == 2)
    clock.poke("third")
    time.sleep(0.3)
    assert "third" not in ran  # a bounded pool: two workers, both blocked
    release.set()
    _wait(lambda: "third" in ran)


def test_a_namespace_never_runs_twice_at_once_and_pokes_while_it_runs_make_one_more_run(
        clocks: list[RightsClock]) -> None:
    release = threading.Event()
    runs: list[float] = []
    active = 0
    most = 0
    lock = threading.Lock()

    def reconcile(namespace: str) -> datetime | None:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
            runs.append(time.time())
        if len(runs) == 1:
            release.wait(10)
        with lock:
            active -= 1
        return None

    clocks.append(clock := RightsClock(reconcile, workers=4, heartbeats=Heartbeats()))
    clock.poke("ns")
    _wait(lambda: len(runs) == 1)
    for _ in range(5):  # a burst of window events while the first run is blocked
        clock.poke("ns")
        time.sleep(0.02)
    time.sleep(0.2)
    assert len(runs) == 1  # four idle workers, yet the namespace is not run a second time at once
    release.set()
    _wait(lambda: len(runs) == 2)
    time.sleep(0.3)
    assert len(runs) == 2 and most == 1


def test_pokes_are_spaced_after_a_run_alarms_are_not_and_an_idle_poke_skips_a_busy_key(
        clocks: list[RightsClock]) -> None:
    runs: list[float] = []
    alarm: list[datetime | None] = [None]

    def reconcile(namespace: str) -> datetime | None:
        runs.append(time.time())
        aimed, alarm[0] = alarm[0], None  # each alarm is returned once
        return aimed

    clocks.append(clock := RightsClock(reconcile, heartbeats=Heartbeats(), spacing=0.5))
    clock.poke("ns")
    _wait(lambda: len(runs) == 1)
    clock.poke("ns")  # right after the run: no sooner than 0.5 s after it ended
    _wait(lambda: len(runs) == 2)
    assert runs[1] - runs[0] >= 0.45
    clock.poke("ns", idle=5.0)  # a safety net for a namespace that just ran: nothing
    time.sleep(0.7)
    assert len(runs) == 2
    alarm[0] = _in(0.1)  # an alarm the run aims at is met at its instant, spacing or not
    clock.poke("ns")
    _wait(lambda: len(runs) == 4)
    assert runs[3] - runs[2] < 0.4
    time.sleep(0.6)
    clock.poke("ns", idle=0.5)  # idle long enough: it runs
    _wait(lambda: len(runs) == 5)


def test_the_clock_keeps_itself_aimed_at_the_next_transition(clocks: list[RightsClock]) -> None:
    runs: list[float] = []
    transitions = [_in(0.2), _in(0.4), None]

    def reconcile(namespace: str) -> datetime | None:
        runs.append(time.time())
        return transitions[len(runs) - 1]

    clocks.append(clock := RightsClock(reconcile, heartbeats=Heartbeats()))
    clock.poke("ns")
    _wait(lambda: len(runs) == 3)
    time.sleep(0.2)
    assert len(runs) == 3


def test_retry_delay_doubles_from_one_second_to_its_cap() -> None:
    assert [retry_delay(n, 1.0, 30.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert [retry_delay(n, 1.0, 60.0) for n in range(5, 9)] == [16, 32, 60, 60]
    assert retry_delay(100_000, 1.0, 30.0) == 30  # a namespace failing for days still gets a number


def test_failures_back_off_pokes_do_not_cut_it_short_and_a_success_resets_it(clocks: list[RightsClock]) -> None:
    outcomes = ["fail", "fail", "fail", "fail", "ok", "fail", "ok"]
    runs: list[float] = []

    def reconcile(namespace: str) -> datetime | None:
        runs.append(time.time())
        if outcomes[len(runs) - 1] == "fail":
            raise RuntimeError("the API server timed out")
        return _in(0.1) if len(runs) == 5 else None  # the success aims at a transition in 0.1 s

    clocks.append(clock := RightsClock(reconcile, retry_first=0.1, retry_max=0.4, heartbeats=Heartbeats()))
    clock.poke("ns")
    _wait(lambda: len(runs) == 4)
    clock.poke("ns")  # during the 0.4 s backoff after the fourth failure: not run earlier
    _wait(lambda: len(runs) == 7)
    gaps = [later - earlier for earlier, later in zip(runs, runs[1:], strict=False)]
    # 0.1, 0.2, 0.4 (doubling), 0.4 (the cap, despite the poke), 0.1 (the aimed transition),
    # then 0.1 again: the success reset the backoff.
    for gap, expected in zip(gaps, [0.1, 0.2, 0.4, 0.4, 0.1, 0.1], strict=True):
        assert expected - 0.01 <= gap < expected + 0.15, gaps


def test_heartbeat_staleness_with_an_injected_clock() -> None:
    now = [1000.0]
    beats = Heartbeats(clock=lambda: now[0])
    beats.beat("loop", limit=10)
    with beats.busy("task", limit=5):
        now[0] += 5
        assert beats.stale() == []  # exactly at the limit is still alive
        now[0] += 0.5
        assert beats.stale() == [Stale("task", 5.5, 5)]
        now[0] += 5
        assert [s.name for s in beats.stale()] == ["loop", "task"]  # oldest first
        assert str(beats.stale()[0]) == "loop: 10 s (limit 10 s)"
        beats.beat("loop", limit=10)  # the loop turned again
        assert [s.name for s in beats.stale()] == ["task"]
    assert beats.stale() == []  # the task finished
    assert beats.ages() == {"loop": 0.0}
    assert beats.stale(now=now[0] + 11) == [Stale("loop", 11.0, 10)]


def test_a_hung_metrics_sweep_stops_the_inventory_heartbeat() -> None:
    hang = threading.Event()
    beats = Heartbeats()

    def sweep() -> None:
        hang.wait(10)  # a sweep that never returns
        raise RuntimeError("released")

    loop = InventoryLoop(sweep, interval=0.05, first_delay=0.0, stuck_seconds=0.2, heartbeats=beats)
    loop.start()
    try:
        _wait(lambda: [s.name for s in beats.stale()] == [INVENTORY_HEARTBEAT])
    finally:
        loop.stop()
        hang.set()
    assert beats.stale() == []


def test_the_probe_fails_while_a_thread_is_stuck_and_pings_kopfs_handler_threads() -> None:
    from kubemam.controllers import main

    settings = kopf.OperatorSettings()
    beats = health.HEARTBEATS
    try:
        asyncio.run(main.heartbeats(settings=settings))  # healthy, and a no-op handed to Kopf's threads
        _wait(lambda: not beats.running(main.KOPF_THREADS_HEARTBEAT))  # which ran it
        beats.start("rights reconcile media-a", limit=0.0)
        time.sleep(0.01)
        with pytest.raises(kopf.PermanentError, match="stuck: rights reconcile media-a"):
            asyncio.run(main.heartbeats(settings=settings))
        beats.finish("rights reconcile media-a")
        assert "rights reconcile media-a" not in asyncio.run(main.heartbeats(settings=settings))
    finally:
        beats.finish("rights reconcile media-a")
        settings.execution.executor.shutdown(wait=False)


# --- the archive clock: the same clock keyed by asset ---------------------------------------------


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


def test_a_reconcile_resets_an_assets_alarm_and_an_event_only_aims_one_that_has_none(
        clocks: list[AimedClock]) -> None:
    ran: list[str] = []
    clocks.append(clock := _archive_clock(lambda key: ran.append(key) and None))
    clock.aim("media/ep1", _in(0.3))
    clock.reset("media/ep1", _in(3600))  # a fresh reconcile found it waits on its Jobs: later, not sooner
    assert clock.alarm("media/ep1") is not None and clock.alarm("media/ep1") > _in(3000)  # type: ignore[operator]
    clock.ensure("media/ep1", _in(0.1))  # an event: the alarm the reconcile set stands
    clock.ensure("media/ep2", _in(0.1))  # never reconciled here: the event aims it
    clock.aim("media/ep3", _in(0.1))
    clock.reset("media/ep3", None)  # Ready now: no alarm
    _wait(lambda: "media/ep2" in ran)
    time.sleep(0.4)
    assert ran == ["media/ep2"]
    assert clock.alarm("media/ep3") is None
