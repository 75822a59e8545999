"""The archive worker's retry rule: a body cut off after streaming for a while is read again whenever that
happens, failures that moved no bytes end at the window, a site that fails every call ends the run, and a 412
is retried only where a copy asked for it."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from kubemam.steps.archive import LocationInput, ObjectInput
from kubemam.storage import transfer
from kubemam.storage.legalhold import Holds
from kubemam.storage.uri import S3Uri
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

    target_refused = _error("PreconditionFailed", 412, "CompleteMultipartUpload")
    action, calls = _actions(clock, [(0.1, target_refused), (0.1, None)])
    with pytest.raises(ClientError):  # a 412 from a call that reads no source says nothing of the source
        archive._with_retry(SITE, action, reread_changed=True, sleep=slept.append, clock=clock)
    assert len(calls) == 1


class Store:
    """A fake S3 client standing for one site: its bucket answers HEAD (or fails as told), its objects answer
    HEAD (or fail as told); it counts the worker's waits."""

    def __init__(self, bucket_error: BaseException | None = None, object_error: BaseException | None = None) -> None:
        self.bucket_error, self.object_error = bucket_error, object_error
        self.bucket_heads = self.object_heads = 0

    def head_bucket(self, Bucket: str) -> dict[str, Any]:  # noqa: N803 (boto3's parameter name)
        self.bucket_heads += 1
        if self.bucket_error is not None:
            raise self.bucket_error
        return {}

    def head_object(self, Bucket: str, Key: str, **options: Any) -> dict[str, Any]:  # noqa: N803 (boto3's names)
        self.object_heads += 1
        if self.object_error is not None:
            raise self.object_error
        return {}


def _site(name: str, store: Store) -> archive.Site:
    location = LocationInput(name=name, uri=f"s3://kubemam-{name}/archive/ep1")
    return archive.Site(location, transfer.Place(name, store, name), S3Uri.parse(location.uri),
                        cast(Holds, None), name)


def _error(code: str, status: int, operation: str = "GetObject") -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


def test_a_failed_copy_waits_for_its_source_as_well_as_its_target() -> None:
    """Either end of a cross-site copy may be the one down: the retry waits until both answer. The source is
    asked about the object it holds, not a bucket: a 403 or 404 there is an answer (the original may sit in a
    bucket its reader may not list), so the wait ends and the copy runs again."""
    for source_error in (None, _error("403", 403, "HeadObject"), _error("404", 404, "HeadObject")):
        target, source = Store(), Store(object_error=source_error)
        clock = Clock()
        action, calls = _actions(clock, [(0.1, ReadTimeoutError(endpoint_url="http://vault")), (0.1, None)])
        origin = _site("library", source)
        assert archive._with_retry(_site("vault", target), action, source=(origin, origin.key("master.mov")),
                                   clock=clock) == "copied"
        assert (len(calls), target.bucket_heads, source.object_heads, source.bucket_heads) == (2, 1, 1, 0)


def test_a_source_head_that_fails_on_the_client_side_is_no_answer() -> None:
    """Missing credentials or a broken request are not an answer from the source: the wait raises them, as a
    transient failure past the window is raised."""
    origin = _site("library", Store(object_error=NoCredentialsError()))
    with pytest.raises(NoCredentialsError):
        archive._source_answers(origin, origin.key("master.mov"))
    gone = _site("library", Store(object_error=_error("404", 404, "HeadObject")))
    archive._source_answers(gone, gone.key("master.mov"))  # an answer: the copy's next attempt says what it means


MASTER = ObjectInput(key="master.mov", sha256="0" * 64, size=10)
CUT = ResponseStreamingError(error="connection reset")


def _copies(monkeypatch: pytest.MonkeyPatch, outcomes: dict[str, list[BaseException | str]]) -> list[str]:
    """transfer.copy_verified replaced: a copy from location L ends as outcomes[L] says, in turn (an
    exception, or how it was verified); the locations copied from, in order, are returned."""
    monkeypatch.setenv("KUBEMAM_S3_RETRY_SECONDS", "1")
    tried: list[str] = []

    def copy_verified(src: transfer.Place, *args: Any, **kwargs: Any) -> str:
        tried.append(src.name)
        outcome = outcomes[src.name][min(len(outcomes[src.name]) - 1, tried.count(src.name) - 1)]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
    monkeypatch.setattr(transfer, "copy_verified", copy_verified)
    return tried


def _sources(*sites: tuple[str, Store]) -> list[archive.Source]:
    return [archive.Source(site, site.key(MASTER.key)) for site in (_site(name, store) for name, store in sites)]


def test_a_source_whose_retries_are_spent_gives_way_to_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    tried = _copies(monkeypatch, {"nearline": [CUT], "library": ["s3-etag"]})
    sources = _sources(("nearline", Store()), ("library", Store()))
    assert archive._put_object(MASTER, sources, _site("vault", Store()), "STANDARD") == "s3-etag"
    assert tried == ["nearline"] * archive.MAX_ATTEMPTS + ["library"]


def test_a_source_rewritten_again_and_again_gives_way_to_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive.time, "sleep", lambda seconds: None)
    tried = _copies(monkeypatch, {"nearline": [_412()], "library": ["s3-etag"]})
    sources = _sources(("nearline", Store()), ("library", Store()))
    assert archive._put_object(MASTER, sources, _site("vault", Store()), "STANDARD") == "s3-etag"
    assert tried == ["nearline"] * (archive.CHANGED_RETRIES + 1) + ["library"]


def test_a_target_that_is_down_ends_the_copy_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The target is the end that failed: no other source helps, and its window is not spent again."""
    tried = _copies(monkeypatch, {"nearline": [CUT], "library": ["s3-etag"]})
    down = Store(bucket_error=EndpointConnectionError(endpoint_url="http://vault"))
    with pytest.raises(EndpointConnectionError):
        archive._put_object(MASTER, _sources(("nearline", Store()), ("library", Store())), _site("vault", down),
                            "STANDARD")
    assert set(tried) == {"nearline"}


@pytest.mark.parametrize(("outcomes", "raised"), [
    # Every source failed for now: a later run may copy it, so the pod fails retryably.
    ({"nearline": [CUT], "library": [CUT]}, ResponseStreamingError),
    ({"nearline": [transfer.SourceDamaged("nearline:master.mov does not hash")], "library": [CUT]},
     ResponseStreamingError),
    # Every source is damaged: no retry brings an intact copy.
    ({"nearline": [transfer.SourceDamaged("nearline:master.mov does not hash")],
      "library": [transfer.CopyNotVerified("vault:master.mov read back as None")]}, archive.StepError),
], ids=["all unreachable", "damaged and unreachable", "all damaged"])
def test_what_a_copy_with_no_source_left_raises(monkeypatch: pytest.MonkeyPatch,
                                                outcomes: dict[str, list[BaseException | str]],
                                                raised: type[BaseException]) -> None:
    _copies(monkeypatch, outcomes)
    with pytest.raises(raised):
        archive._put_object(MASTER, _sources(("nearline", Store()), ("library", Store())), _site("vault", Store()),
                            "STANDARD")


def test_a_refusal_is_put_on_the_end_that_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A source gone or refused since it was listed gives way to the next source; a refusal while the source
    still reads is the target's, and is raised for place() to name."""
    gone = _error("NoSuchKey", 404)
    tried = _copies(monkeypatch, {"nearline": [gone], "library": ["s3-etag"]})
    sources = _sources(("nearline", Store(object_error=_error("404", 404, "HeadObject"))), ("library", Store()))
    assert archive._put_object(MASTER, sources, _site("vault", Store()), "STANDARD") == "s3-etag"
    assert tried == ["nearline", "library"]

    refused = _error("AccessDenied", 403, "PutObject")
    tried = _copies(monkeypatch, {"nearline": [refused], "library": ["s3-etag"]})
    with pytest.raises(ClientError):
        archive._put_object(MASTER, _sources(("nearline", Store()), ("library", Store())), _site("vault", Store()),
                            "STANDARD")
    assert tried == ["nearline"]


def test_a_location_that_refuses_to_say_whether_it_holds_a_copy_is_passed_over() -> None:
    """A 403 on a kept copy's HEAD (no s3:GetObject there) is not the target's refusal: the copy is read from
    another location or the original."""
    refusing, down = Store(object_error=_error("403", 403, "HeadObject")), Store(
        object_error=EndpointConnectionError(endpoint_url="http://nearline"))
    sites = {"vault": _site("vault", Store()), "nearline": _site("nearline", down),
             "offsite": _site("offsite", refusing)}
    master = ObjectInput(key="master.mov", sha256="0" * 64, size=10, source="s3://kubemam-library/incoming/ep1.mov")
    default = _site("library", Store())
    assert archive._source_for(master, sites, "vault", default) == [
        archive.Source(default, S3Uri.parse("s3://kubemam-library/incoming/ep1.mov"))]
    assert (refusing.object_heads, down.object_heads) == (1, 1)


class Cold(Store):
    """A site whose copy is in a cold class (restored or not); it records the thaws asked of it."""

    def __init__(self, storage_class: str, restore: str | None = None) -> None:
        super().__init__()
        self.storage_class, self.restore, self.thaws = storage_class, restore, 0

    def head_object(self, Bucket: str, Key: str, **options: Any) -> dict[str, Any]:  # noqa: N803 (boto3's names)
        found = {"StorageClass": self.storage_class, "ContentLength": 10}
        return {**found, "Restore": self.restore} if self.restore else found

    def restore_object(self, Bucket: str, Key: str, RestoreRequest: dict[str, Any]) -> None:  # noqa: N803
        self.thaws += 1


def test_no_thaw_is_asked_while_another_copy_can_be_read() -> None:
    """A cold copy listed before a readable one is passed over, not thawed (a thaw costs and takes hours)."""
    glacier, vault = Cold("DEEP_ARCHIVE"), Store()
    sources = _sources(("deep", glacier), ("vault", vault))
    readable, restoring = archive._readable_or_thaw(sources)
    assert ([site.location.name for site, _, _ in readable], restoring, glacier.thaws) == (["vault"], None, 0)

    restored = Cold("GLACIER", restore='ongoing-request="false", expiry-date="Fri, 11 Dec 2026 00:00:00 GMT"')
    readable, restoring = archive._readable_or_thaw(_sources(("cold", restored)))
    assert [site.location.name for site, _, _ in readable] == ["cold"] and restoring is None


class Kept(Cold):
    """A site holding a copy kubemam verified (its recorded sha256 and size), in the class given."""

    def head_object(self, Bucket: str, Key: str, **options: Any) -> dict[str, Any]:  # noqa: N803 (boto3's names)
        self.object_heads += 1
        return {**super().head_object(Bucket, Key), "Metadata": {transfer.SHA256_METADATA: MASTER.sha256}}


def test_a_kept_copy_is_asked_once_whether_it_can_be_read() -> None:
    """The HEAD that finds a verified copy at a location also says whether it is cold: the thaw check does not
    ask again (one HEAD per kept copy and target, not two; the original, found by no HEAD, is asked once)."""
    deep, nearline, original = Kept("DEEP_ARCHIVE"), Kept("STANDARD"), Store()
    sites = {"vault": _site("vault", Store()), "deep": _site("deep", deep), "nearline": _site("nearline", nearline)}
    master = MASTER.model_copy(update={"source": "s3://kubemam-library/incoming/ep1.mov"})
    readable, restoring = archive._readable_or_thaw(archive._source_for(master, sites, "vault",
                                                                        _site("library", original)))
    assert [site.location.name for site, _, _ in readable] == ["nearline", "library"] and restoring is None
    assert (deep.object_heads, nearline.object_heads, original.object_heads, deep.thaws) == (1, 1, 1, 0)


def test_only_cold_copies_thaw_the_first_once() -> None:
    first, second = Cold("DEEP_ARCHIVE"), Cold("GLACIER")
    readable, restoring = archive._readable_or_thaw(_sources(("deep", first), ("cold", second)))
    assert readable == [] and restoring == {"location": "deep", "storageClass": "DEEP_ARCHIVE",
                                            "estimatedSeconds": 12 * 3600}
    assert (first.thaws, second.thaws) == (1, 0)
    thawing = Cold("GLACIER", restore='ongoing-request="true"')
    readable, restoring = archive._readable_or_thaw(_sources(("cold", thawing)))
    assert restoring is not None and restoring["estimatedSeconds"] == 5 * 3600 and thawing.thaws == 0


def test_an_original_gone_since_ingest_does_not_stand_in_for_the_cold_copy() -> None:
    """The set is only in DEEP_ARCHIVE and the ingest original was deleted: the cold copy is thawed (a gone
    original is dropped), and one whose HEAD failed is tried but asks the thaw all the same."""
    deep = Cold("DEEP_ARCHIVE")
    readable, restoring = archive._readable_or_thaw(_sources(("deep", deep),
                                                             ("library", Store(object_error=_error("404", 404)))))
    assert readable == [] and restoring is not None and restoring["location"] == "deep" and deep.thaws == 1

    deep = Cold("DEEP_ARCHIVE")
    readable, restoring = archive._readable_or_thaw(_sources(
        ("deep", deep), ("library", Store(object_error=EndpointConnectionError(endpoint_url="http://library")))))
    assert readable == [] and restoring is not None and deep.thaws == 1

    readable, restoring = archive._readable_or_thaw(_sources(
        ("nearline", Store(object_error=EndpointConnectionError(endpoint_url="http://nearline"))),
        ("library", Store(object_error=_error("404", 404)))))
    assert [site.location.name for site, _, _ in readable] == ["nearline"] and restoring is None


class Readable(Store):
    """A site that serves one object's bytes, or refuses the GET (the HEAD still answers: SSE-KMS without
    kms:Decrypt); written objects land in `written`."""

    def __init__(self, data: bytes = b"", get_error: BaseException | None = None) -> None:
        super().__init__()
        self.data, self.get_error, self.written = data, get_error, {}

    def get_object(self, Bucket: str, Key: str, **options: Any) -> dict[str, Any]:  # noqa: N803 (boto3's names)
        if self.get_error is not None:
            raise self.get_error
        return {"Body": io.BytesIO(self.data)}

    def put_object(self, Bucket: str, Key: str, Body: bytes, **options: Any) -> dict[str, Any]:  # noqa: N803
        self.written[f"{Bucket}/{Key}"] = Body
        return {}


def test_a_source_that_refuses_its_bytes_gives_way_and_is_not_named_as_the_target() -> None:
    """The GET of a kept copy is refused while its HEAD answers: the copy comes from the next source, through
    the real copy code; with no other source the error names the source, not the target."""
    data = b"master 10B"
    master = ObjectInput(key="master.mov", sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    refusing = Readable(get_error=_error("AccessDenied", 403))
    target = Readable()
    sources = _sources(("offsite", refusing), ("library", Readable(data)))
    assert archive._put_object(master, sources, _site("vault", target), "STANDARD") == "s3-checksum"
    assert target.written == {"kubemam-vault/archive/ep1/master.mov": data}

    with pytest.raises(archive.StepError, match="offsite:s3://kubemam-offsite/archive/ep1/master.mov cannot be "
                                                "read: AccessDenied"):
        archive._put_object(master, _sources(("offsite", refusing)), _site("vault", Readable()), "STANDARD")
