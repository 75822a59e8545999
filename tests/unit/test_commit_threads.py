"""The commit's thread fan-out (storage/s3.py _each): every entry once, a bounded number waiting, no new work
after a failure, and the first failure raised."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from kubemam.storage import s3
from kubemam.storage.s3 import COMMIT_THREADS, PARALLEL_BELOW, _each


@dataclass(frozen=True)
class Entry:
    key: str
    size: int


def test_every_entry_runs_once_small_ones_on_threads_large_ones_after() -> None:
    entries = [Entry(f"seg-{n}", 100) for n in range(500)] + [Entry("whole.mp4", PARALLEL_BELOW)]
    seen: list[str] = []
    threads: set[str] = set()
    lock = threading.Lock()

    def record(entry: Entry) -> None:
        with lock:
            seen.append(entry.key)
            threads.add(threading.current_thread().name)

    _each(entries, record)
    assert sorted(seen) == sorted(e.key for e in entries) and seen[-1] == "whole.mp4"
    assert 1 < len(threads) <= COMMIT_THREADS + 1


def test_submitted_calls_stay_bounded_whatever_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """A programme's thousands of segments never sit in the pool's queue at once."""
    submitted = []
    most = [0]
    original = s3.ThreadPoolExecutor.submit

    def counting(self: s3.ThreadPoolExecutor, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        future = original(self, fn, *args, **kwargs)
        if self._thread_name_prefix == "commit":  # the class is shared: other pools in this process are not ours
            submitted.append(future)
            # Counted on the submitting thread, right after the submit: a future only ever turns done while
            # the count runs, so it never counts more than were waiting (counted on the worker threads, while
            # this list grew, a busy machine saw 18).
            most[0] = max(most[0], sum(not f.done() for f in submitted))
        return future

    monkeypatch.setattr(s3.ThreadPoolExecutor, "submit", counting)

    def slow(entry: Entry) -> None:
        time.sleep(0.001)

    _each([Entry(str(n), 1) for n in range(2000)], slow)
    assert len(submitted) == 2000
    assert most[0] <= 2 * COMMIT_THREADS


def test_the_earliest_entrys_failure_is_raised_after_the_running_calls_end() -> None:
    ended: list[int] = []
    lock = threading.Lock()

    def upload(entry: Entry) -> None:
        number = int(entry.key)
        if number in (5, 2):
            time.sleep(0.05 if number == 2 else 0)
            raise RuntimeError(f"refused {number}")
        time.sleep(0.02)
        with lock:
            ended.append(number)

    with pytest.raises(RuntimeError, match="refused 2"):
        _each([Entry(str(n), 1) for n in range(10)], upload)
    assert sorted(ended) == [0, 1, 3, 4, 6, 7, 8, 9]  # fewer than the window: all ran, and had ended


def test_no_call_starts_after_a_failure_and_the_first_failure_is_raised() -> None:
    started: list[int] = []
    lock = threading.Lock()
    three_started = threading.Event()

    def upload(entry: Entry) -> None:
        with lock:
            started.append(int(entry.key))
        if entry.key == "3":
            three_started.set()
            raise RuntimeError("SlowDown on 3")
        # The others end well after 3 has failed, however loaded the machine: the failure is the first thing
        # the fan-out sees finish, so the bound below is exact rather than a race.
        three_started.wait()
        time.sleep(0.05)

    with pytest.raises(RuntimeError, match="SlowDown on 3"):
        _each([Entry(str(n), 1) for n in range(5000)], upload)
    assert len(started) <= 2 * COMMIT_THREADS  # what was submitted when it failed, not the other 4,980
