"""The archive worker's retry rule: a body cut off after streaming for a while is read again whenever that
happens, failures that moved no bytes end at the window, a site that fails every call ends the run, and a 412
is retried only where a copy asked for it."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError, ResponseStreamingError

from kubemam.worker import archive


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Bucket:
    """A site whose bucket answers HEAD: the outage has passed by the time the worker asks."""

    def head_bucket(self, Bucket: str) -> dict[str, Any]:  # noqa: N803 (boto3's parameter name)
        return {}


SITE = cast(archive.Site, SimpleNamespace(location=SimpleNamespace(name="vault"), place=SimpleNamespace(s3=Bucket()),
                                          root=SimpleNamespace(bucket="kubemam-vault")))


def _412() -> ClientError:
    return ClientError({"Error": {"Code": "PreconditionFailed"}, "ResponseMetadata": {"HTTPStatusCode": 412}},
                       "UploadPartCopy")


def _actions(clock: Clock, steps: list[tuple[float, BaseException | None]]) -> tuple[Callable[[], str], list[int]]:
    """An action that, on its nth call, lets steps[n][0] seconds pass and then raises steps[n][1] (or ends)."""
    calls: list[int] = []

    def action() -> str:
        seconds, error = steps[len(calls)]
        calls.append(1)
        clock.now += seconds
        if error is not None:
            raise error
        return "copied"
    return action, calls


def test_a_copy_cut_off_after_the_window_has_passed_is_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMAM_S3_RETRY_SECONDS", "60")
    clock = Clock()
    cut = ResponseStreamingError(error="connection reset")
    action, calls = _actions(clock, [(3600.0, cut), (1800.0, cut), (10.0, None)])
    assert archive._with_retry(SITE, action, clock=clock) == "copied"
    assert len(calls) == 3


@pytest.mark.parametrize(("window", "error", "seconds", "calls_made"), [
    # None streamed long enough to count as progress; the fifth failed 20 s after the first began.
    ("20", ResponseStreamingError(error="connection reset"), 4.0, 5),
    # Timeouts moved no bytes, however long they took: 30 s, then 60 s after the first began.
    ("60", ReadTimeoutError(endpoint_url="http://vault"), 30.0, 2),
], ids=["quick cuts", "slow timeouts"])
def test_failures_without_progress_end_at_the_window(monkeypatch: pytest.MonkeyPatch, window: str,
                                                     error: Exception, seconds: float, calls_made: int) -> None:
    monkeypatch.setenv("KUBEMAM_S3_RETRY_SECONDS", window)
    clock = Clock()
    action, calls = _actions(clock, [(seconds, error)] * 6 + [(1.0, None)])
    with pytest.raises(type(error)):
        archive._with_retry(SITE, action, clock=clock)
    assert len(calls) == calls_made


def test_a_site_that_answers_but_fails_every_call_ends_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMAM_S3_RETRY_SECONDS", "100000")
    clock = Clock()
    cut = ResponseStreamingError(error="connection reset")
    action, calls = _actions(clock, [(6.0, cut)] * 20)  # each ran long enough to restart the window
    with pytest.raises(ResponseStreamingError):
        archive._with_retry(SITE, action, clock=clock)
    assert len(calls) == archive.MAX_ATTEMPTS


def test_a_changed_source_is_copied_again_a_few_times_with_a_pause_and_only_where_asked() -> None:
    clock = Clock()
    slept: list[float] = []
    action, calls = _actions(clock, [(0.1, _412()), (0.1, None)])
    assert archive._with_retry(SITE, action, reread_changed=True, sleep=slept.append, clock=clock) == "copied"
    assert (len(calls), slept) == (2, [1.0])

    action, calls = _actions(clock, [(0.1, _412())] * 10)
    with pytest.raises(ClientError):
        archive._with_retry(SITE, action, reread_changed=True, sleep=slept.append, clock=clock)
    assert len(calls) == archive.CHANGED_RETRIES + 1

    action, calls = _actions(clock, [(0.1, _412()), (0.1, None)])
    with pytest.raises(ClientError):  # a lock, a class change or the manifest: a 412 there is an error
        archive._with_retry(SITE, action, sleep=slept.append, clock=clock)
    assert len(calls) == 1


class Asked(Bucket):
    """A bucket that counts the worker's waits on it."""

    def __init__(self) -> None:
        self.asked = 0

    def head_bucket(self, Bucket: str) -> dict[str, Any]:  # noqa: N803 (boto3's parameter name)
        self.asked += 1
        return {}


def _site(name: str, bucket: Asked) -> archive.Site:
    return cast(archive.Site, SimpleNamespace(location=SimpleNamespace(name=name), place=SimpleNamespace(s3=bucket),
                                              root=SimpleNamespace(bucket=f"kubemam-{name}")))


def test_a_failed_copy_waits_for_its_source_site_as_well_as_its_target() -> None:
    """Either end of a cross-site copy may be the one down: the retry waits until both answer."""
    target, source = Asked(), Asked()
    clock = Clock()
    action, calls = _actions(clock, [(0.1, ReadTimeoutError(endpoint_url="http://vault")), (0.1, None)])
    assert archive._with_retry(_site("vault", target), action, source=_site("library", source), clock=clock) == "copied"
    assert (len(calls), target.asked, source.asked) == (2, 1, 1)
