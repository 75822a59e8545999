"""`kubemam worker distribute`: one batch of publishes to and takedowns from distribution origins.

The operator decides which (asset, target) pairs must be published or taken down and runs one
Job per batch. Every action is idempotent, so a re-run after a crash at any point converges:

- **publish** server-side copies the package's objects (those its manifest names; the manifest
  itself is internal) to the same relative keys under the origin, in waves: media first, then
  playlists deepest first (HLS media playlists, then the multivariant playlist and the MPD), so
  a player that finds a manifest finds everything it names. An object already at the origin
  with the same size and ETag is not copied again. The origin listing must then hold every
  object at its size.
- **takedown** deletes in the reverse waves (top-level manifests first, segments last) with
  DeleteObjects batches, lists again and repeats until the origin is empty (at most
  TAKEDOWN_ROUNDS), then POSTs the removed paths to the purge webhook. Before the first delete
  the paths go to the batch's pending-purge ledger (<library>/distribute/pending-purges/<batch>.json,
  one object; an origin leaves it once purged), so a re-run after a crash or a failed purge
  (this batch's or a later one's for the same origin) purges the same paths though nothing is
  left to delete.
- **feeds** are written whole after the actions (less the entries of publishes that failed); a feed
  that cannot be written fails the batch's actions on its bucket and channel (their effect is not
  advertised, or still is), so they are retried with it. The **usage** object last, with the records
  of the actions that verified (also when others failed: what happened is recorded; a re-run keeps
  the earlier time of a record it repeats) and, when some failed, every failure in full.

Work is batched across the actions of the batch (each wave is one set of parallel calls on one
pool), so a hundred takedowns cost a few DeleteObjects calls, not a hundred sequences.

**One bad action never stops the others.** An action whose origin overlaps another action's origin,
a package, a feed or the usage object, or whose bucket does not answer (missing, AccessDenied, not
reachable), fails alone, before anything touches its storage; every other action runs. Only the
library (the usage object's bucket) is needed by the whole batch.

Exit codes: an input that `steps.distribute.DistributeInput` refuses is a StepError naming the field
before anything touches storage (exit 2). When every action verified: exit 0 with `DistributeResult`.
When some failed: the usage object, then exit 2 with `DistributeFailure` (which actions failed, in
the worker's words, within the 4 KiB termination message): the Job fails at once and the rights
planner records what verified and quarantines the failed (asset, target) pairs, each retried with
backoff. Anything else (the library unreachable, a crash) exits 1 and the Job controller retries the
pod; the re-run converges.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, TypeVar, get_args

from botocore.exceptions import ClientError
from pydantic import ValidationError

from kubemam.api.rights import Channel
from kubemam.plan.jobs import PERMANENT_FAILURE_EXIT_CODE
from kubemam.redact import redact_text, redact_url
from kubemam.steps.distribute import (
    DistributeFailure,
    DistributeInput,
    DistributeResult,
    feed_entries,
    input_problem,
)
from kubemam.storage.s3 import make_client, read_json, read_manifest, wait_until_reachable
from kubemam.storage.transfer import copy_within
from kubemam.storage.uri import S3Uri, S3UriError
from kubemam.worker.contract import MAX_MESSAGE, StepError, staged_file, staged_path, step_input, write_result
from kubemam.worker.listing import Listing, list_prefix, list_prefixes

log = logging.getLogger("kubemam.worker.distribute")

S3_RETRY_SECONDS = float(os.environ.get("KUBEMAM_S3_RETRY_SECONDS") or 60)
THREADS = 8  # parallel S3 calls; below botocore's pool of 10 connections
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
TAKEDOWN_ROUNDS = 5
WEBHOOK_TIMEOUT = 5.0
WEBHOOK_ATTEMPTS = 3
PLAYLIST_SUFFIXES = (".mpd", ".m3u8")
CHANNELS = frozenset(get_args(Channel))
PURGE_LEDGER_DIR = "distribute/pending-purges"

T = TypeVar("T")
R = TypeVar("R")


# --- the input ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    index: int
    action: str
    asset: str
    target: str
    channel: str
    territories: tuple[str, ...]
    window: str
    package: S3Uri | None
    origin: S3Uri
    purge_webhook: str | None

    @property
    def name(self) -> str:
        return f"{self.action} {self.asset} on {self.target}"


@dataclass(frozen=True)
class Feed:
    uri: S3Uri
    entries: tuple[dict[str, Any], ...] = ()  # read from `file` by load_feeds
    file: str | None = None  # staged beside the input (plan/staging.py)
    sha256: str | None = None
    count: int = 0


@dataclass(frozen=True)
class Batch:
    namespace: str
    batch: str
    actions: tuple[Action, ...]
    feeds: tuple[Feed, ...]
    usage: S3Uri
    refused: Mapping[int, str] = field(default_factory=dict)  # action index -> why it may not run
    not_before: datetime | None = None  # armed: nothing is deleted before then


def _uri(text: str, where: str) -> S3Uri:
    try:
        return S3Uri.parse(text)
    except S3UriError as err:  # the model checked the same rule; kept in case the two drift apart
        raise StepError(f"{where}: {err}") from err


def overlap_problems(actions: Sequence[Action], feeds: Sequence[Feed], usage: S3Uri) -> dict[int, str]:
    """The actions that may not run, and why: an origin that holds or lies inside another origin, a
    package, a feed or the usage object (a takedown deletes everything under its origin). Only those
    actions fail; the batch's others run."""
    problems: dict[int, str] = {}
    first: dict[str, int] = {}
    for action in actions:
        origin = f"{action.origin.bucket}/{action.origin.prefix}"
        if origin in first:
            problems[action.index] = (f"actions[{action.index}]: another action of the batch "
                                      f"(actions[{first[origin]}]) has the origin {action.origin}")
        else:
            first[origin] = action.index
    # (path, what, index of the action whose origin it is, or -1)
    places = {(path, f"origin {actions_by_index(actions)[i].origin}", i) for path, i in first.items()}
    places |= {(f"{a.package.bucket}/{a.package.prefix}", f"package {a.package}", -1) for a in actions if a.package}
    places |= {(f"{f.uri.bucket}/{f.uri.key}/", f"feed {f.uri}", -1) for f in feeds}
    places.add((f"{usage.bucket}/{usage.key}/", f"usage object {usage}", -1))
    # Every path ends in "/", so a prefix is a containing folder. Sorted, the paths between a path
    # and one inside it share its prefix, so a stack of the open paths finds every nesting.
    stack: list[tuple[str, str, int]] = []
    for path, what, index in sorted(places):
        while stack and not path.startswith(stack[-1][0]):
            stack.pop()
        if stack and index >= 0:
            problems.setdefault(index, f"{what} lies inside {stack[-1][1]}: a takedown there would delete it")
        for _, holder, outer in stack:
            if outer >= 0:
                problems.setdefault(outer, f"{holder} holds {what}: a takedown there would delete it")
        stack.append((path, what, index))
    return problems


def actions_by_index(actions: Sequence[Action]) -> dict[int, Action]:
    return {a.index: a for a in actions}


def parse_input(raw: Mapping[str, Any]) -> Batch:
    """The batch from KUBEMAM_STEP_INPUT, checked before anything touches storage."""
    try:
        model = DistributeInput.model_validate(raw)
    except ValidationError as err:
        raise StepError(input_problem(err)) from err
    actions = tuple(
        Action(index=i, action=a.action, asset=a.asset, target=a.target, channel=a.channel,
               territories=tuple(a.territories), window=a.window,
               package=_uri(a.package, f"actions[{i}].package") if a.action == "publish" and a.package else None,
               origin=_uri(a.origin, f"actions[{i}].origin"), purge_webhook=a.purge_webhook)
        for i, a in enumerate(model.actions))
    feeds = tuple(Feed(_uri(f.uri, f"feeds[{i}].uri"), file=f.file, sha256=f.sha256, count=f.entries)
                  for i, f in enumerate(model.feeds))
    usage = _uri(model.usage, "input.usage")
    return Batch(model.namespace, model.batch, actions, feeds, usage, overlap_problems(actions, feeds, usage),
                 model.not_before)


def load_feeds(batch: Batch) -> Batch:
    """The feeds' entries, from the files staged beside the input, each checked against its sha256 and
    count before anything touches storage (feeds never travel in the input: they grow with the catalogue)."""
    feeds = []
    for i, feed in enumerate(batch.feeds):
        if feed.file is None:
            feeds.append(feed)
            continue
        text = staged_file(staged_path(feed.file), feed.sha256, f"feeds[{i}]")
        try:
            entries = feed_entries(text)
        except ValueError as err:
            raise StepError(f"feeds[{i}]: {err}") from err
        if len(entries) != feed.count:
            raise StepError(f"feeds[{i}]: the staged file holds {len(entries)} entries, the input says {feed.count}")
        feeds.append(replace(feed, entries=tuple(entries)))
    return replace(batch, feeds=tuple(feeds))


# --- pure decisions ----------------------------------------------------------------------------

def is_playlist(key: str) -> bool:
    return key.lower().endswith(PLAYLIST_SUFFIXES)


def publish_order(keys: Iterable[str]) -> list[list[str]]:
    """Waves to copy in: everything that is not a playlist, then playlists by depth, deepest first
    (a variant playlist before the multivariant playlist that names it). Empty waves are left out."""
    unique = set(keys)
    media = sorted(k for k in unique if not is_playlist(k))
    by_depth: dict[int, list[str]] = {}
    for key in unique:
        if is_playlist(key):
            by_depth.setdefault(key.count("/"), []).append(key)
    waves = [media] + [sorted(by_depth[depth]) for depth in sorted(by_depth, reverse=True)]
    return [wave for wave in waves if wave]


def takedown_order(keys: Iterable[str]) -> list[list[str]]:
    """Waves to delete in: the reverse of publishing, so no manifest outlives what it names."""
    return publish_order(keys)[::-1]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def feed_channel(uri: S3Uri) -> str | None:
    """The channel a feed file is named after (feeds/svod.json → svod), if it names one."""
    stem = PurePosixPath(uri.key).stem
    return stem if stem in CHANNELS else None


def feed_document(feed: Feed, updated: datetime,
                  withheld: AbstractSet[tuple[str, str]] = frozenset()) -> dict[str, Any]:
    """The whole feed: its entries as given, less those of (asset, target) pairs withheld because
    their publish failed (a feed must not advertise what the origin may not hold)."""
    document: dict[str, Any] = {}
    channel = feed_channel(feed.uri)
    if channel is not None:
        document["channel"] = channel
    document["updated"] = iso(updated)
    document["entries"] = [e for e in feed.entries if (e.get("asset"), e.get("target")) not in withheld]
    return document


def usage_record(action: Action, at: datetime, objects: int) -> dict[str, Any]:
    return {"action": action.action, "asset": action.asset, "target": action.target, "channel": action.channel,
            "territories": list(action.territories), "window": action.window, "at": iso(at), "objects": objects}


def _record_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    return record.get("action"), record.get("asset"), record.get("target"), record.get("window")


def merge_usage(prior: Sequence[Mapping[str, Any]], fresh: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """An earlier run's records stay; a record made again keeps the earlier run's time (the
    action verified then), new records follow in their order."""
    earlier = {_record_key(r): r for r in prior}
    merged = [dict(r) for r in prior]
    positions = {_record_key(r): i for i, r in enumerate(merged)}
    for record in fresh:
        key = _record_key(record)
        if key in positions:
            merged[positions[key]] = {**record, "at": min(str(earlier[key].get("at") or record["at"]), record["at"])}
        else:
            positions[key] = len(merged)
            merged.append(record)
    return merged


def usage_document(batch: Batch, records: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
    return {"namespace": batch.namespace, "batch": batch.batch, "complete": complete, "records": records}


def purge_ledger_dir(usage: S3Uri) -> S3Uri:
    """Where takedowns keep the paths they removed until the purge webhook took them: in the
    library that holds the usage object (<library>/usage/<ns>/<batch>.json), one object per batch."""
    parents = PurePosixPath(usage.key).parents
    root = str(parents[2]) if len(parents) > 3 else ""
    return S3Uri(usage.bucket).join(root, PURGE_LEDGER_DIR)


def purge_ledger(usage: S3Uri, batch: str) -> S3Uri:
    return purge_ledger_dir(usage).join(f"{batch}.json")


def failure_summary(failures: Sequence[tuple[str, str]], total: int, limit: int = 5) -> str:
    shown = "; ".join(f"{name}: {why}"[:300] for name, why in failures[:limit])
    more = f" (and {len(failures) - limit} more)" if len(failures) > limit else ""
    return f"{len(failures)} of {total} actions failed: {shown}{more}"


def _size(report: DistributeFailure) -> int:
    return len(json.dumps(report.to_wire(), separators=(",", ":"), sort_keys=True).encode())


def failure_report(failed: Sequence[tuple[int, str]], summary: str, usage: str,
                   limit: int = MAX_MESSAGE) -> DistributeFailure:
    """Which actions failed and why, within `limit` bytes of JSON: each distinct error once, shortened
    as far as needed; past that, the errors that do not fit point at the first entry, which names the
    usage object holding every failure in full. Every failed index is always there."""
    summary = f"distribute: {summary}"
    for width in (300, 150, 80):
        errors: list[str] = []
        pairs: list[tuple[int, int]] = []
        for index, why in failed:
            text = why[:width]
            if text not in errors:
                errors.append(text)
            pairs.append((index, errors.index(text)))
        report = DistributeFailure(error=summary[:1000], failed=pairs, errors=errors, usage=usage)
        if _size(report) <= limit:
            return report
    pointer = f"more failures than fit here: see {usage} (failures)"
    base = DistributeFailure(error=summary[:500], failed=[(i, 0) for i, _ in failed], errors=[pointer], usage=usage)
    room = limit - _size(base) - 8 * len(failed) - 16  # the indexes into errors may grow by digits
    kept: dict[str, int] = {}
    for _, why in failed:
        text = why[:80]
        cost = len(json.dumps(text)) + 1
        if text not in kept and cost <= room:
            kept[text] = len(kept) + 1
            room -= cost
    return DistributeFailure(error=base.error, failed=[(i, kept.get(why[:80], 0)) for i, why in failed],
                             errors=[pointer, *kept], usage=usage)


# --- storage -----------------------------------------------------------------------------------

def _put_json(s3: Any, uri: S3Uri, document: Any) -> None:
    s3.put_object(Bucket=uri.bucket, Key=uri.key, Body=json.dumps(document, indent=2).encode(),
                  ContentType="application/json")


def _gather(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Sequence[T]) -> list[R | Exception]:
    """fn over items on the pool; an exception is returned in its item's place, not raised."""
    def safe(item: T) -> R | Exception:
        try:
            return fn(item)
        except Exception as err:
            return err
    return list(pool.map(safe, items))


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"[:300]


@dataclass
class Outcome:
    action: Action
    objects: int = 0  # published: objects at the origin; taken down: paths removed
    changed: int = 0  # copied or deleted by this run
    at: datetime | None = None
    seconds: float = 0.0
    error: str | None = None
    permanent: bool = False  # retrying the same input will not help (a bad package)

    def fail(self, why: str, permanent: bool = False) -> None:
        if self.error is None:
            self.error, self.permanent = why, permanent


def _package_objects(s3: Any, action: Action) -> Listing:
    """The objects a publish copies: what the package's manifest names, each present at its size."""
    assert action.package is not None
    listing = list_prefix(s3, action.package)
    if not listing:
        raise StepError(f"package {action.package} holds nothing")
    manifest = read_manifest(s3, action.package)
    if manifest is None:
        raise StepError(f"package {action.package} has no manifest.json, so it is not a committed "
                        "package")
    if not manifest.objects:
        raise StepError(f"package {action.package} holds nothing but its manifest")
    broken = [e.key for e in manifest.objects if listing.get(e.key, (-1, ""))[0] != e.size]
    if broken:
        raise StepError(f"package {action.package} is damaged: {len(broken)} objects its manifest "
                        f"names are missing or resized (first: {broken[0]})")
    return {entry.key: listing[entry.key] for entry in manifest.objects}


def _copy(s3: Any, action: Action, key: str, size: int) -> None:
    assert action.package is not None
    source = {"Bucket": action.package.bucket, "Key": action.package.prefix + key}
    target = action.origin.prefix + key
    # Over 5 GiB (CopyObject's limit) in UploadPartCopy parts sized from the object (storage/parts.py).
    copy_within(s3, S3Uri(source["Bucket"], source["Key"]), S3Uri(action.origin.bucket, target), size)


def publish_all(s3: Any, pool: ThreadPoolExecutor, actions: Sequence[Action],
                clock: Callable[[], datetime]) -> list[Outcome]:
    """Read every package, list every origin, copy in waves (manifests last) what is not there yet,
    list again. A bad package fails its publish for good; the others go on."""
    started = time.monotonic()
    outcomes = {a.index: Outcome(a) for a in actions}
    expected: dict[int, Listing] = {}
    for action, got in zip(actions, _gather(pool, lambda a: _package_objects(s3, a), actions), strict=True):
        if isinstance(got, StepError):
            outcomes[action.index].fail(str(got), permanent=True)
        elif isinstance(got, Exception):
            outcomes[action.index].fail(f"reading {action.package}: {_describe(got)}")
        else:
            expected[action.index] = got
            outcomes[action.index].objects = len(got)
    readable = [a for a in actions if a.index in expected]
    existing: dict[int, Listing] = {}
    for action, got in zip(readable, list_prefixes(s3, pool, [a.origin for a in readable], THREADS), strict=True):
        if isinstance(got, Exception):
            outcomes[action.index].fail(f"listing {action.origin}: {_describe(got)}")
        else:
            existing[action.index] = got
    waves = {i: publish_order(expected[i]) for i in existing}
    for number in range(max((len(w) for w in waves.values()), default=0)):
        copies = [(outcomes[i].action, key) for i, w in waves.items() if number < len(w) and outcomes[i].error is None
                  for key in w[number] if existing[i].get(key) != expected[i][key]]
        done = _gather(pool, lambda c: _copy(s3, c[0], c[1], expected[c[0].index][c[1]][0]), copies)
        for (action, key), result in zip(copies, done, strict=True):
            if isinstance(result, Exception):
                outcomes[action.index].fail(f"copying {key}: {_describe(result)}")
            else:
                outcomes[action.index].changed += 1
    live = [outcomes[i].action for i in existing if outcomes[i].error is None]
    for action, got in zip(live, list_prefixes(s3, pool, [a.origin for a in live], THREADS), strict=True):
        outcome = outcomes[action.index]
        if isinstance(got, Exception):
            outcome.fail(f"verifying {action.origin}: {_describe(got)}")
            continue
        wrong = sorted(k for k, (size, _) in expected[action.index].items() if got.get(k, (-1, ""))[0] != size)
        if wrong:
            outcome.fail(f"{len(wrong)} objects missing or resized at {action.origin} after copying (first: "
                         f"{wrong[0]})")
        else:
            outcome.at = clock()
            outcome.seconds = time.monotonic() - started
    return [outcomes[a.index] for a in actions]


def _delete(s3: Any, bucket: str, keys: Sequence[str]) -> set[str]:
    """Delete up to 1000 keys in one call; the keys S3 refused to delete."""
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
    errors = answer.get("Errors", [])
    for error in errors[:3]:
        log.warning("could not delete s3://%s/%s: %s %s", bucket, error.get("Key"), error.get("Code"),
                    error.get("Message"))
    return {str(e.get("Key")) for e in errors}


def purge(url: str, payload: Mapping[str, Any], attempts: int = WEBHOOK_ATTEMPTS, timeout: float = WEBHOOK_TIMEOUT,
          sleep: Callable[[float], None] = time.sleep) -> None:
    """POST the removed paths to the purge webhook; any 2xx answer is success."""
    body = json.dumps(payload).encode()
    last, tries = "", 0
    for attempt in range(attempts):
        tries += 1
        try:
            request = urllib.request.Request(url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                answer.read()
            return
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}"
        except (urllib.error.URLError, OSError) as err:
            last = redact_text(str(getattr(err, "reason", err)))
        except (ValueError, http.client.InvalidURL) as err:  # its text quotes the URL, token and all
            last = f"not a URL urllib can call ({type(err).__name__})"
            break
        if attempt + 1 < attempts:
            sleep(0.5 * 2**attempt)
    raise RuntimeError(f"purge webhook {redact_url(url)} failed {tries} times (last: {last})")


class _Takedowns:
    """The takedowns of a batch, worked wave by wave across all of them."""

    def __init__(self, s3: Any, pool: ThreadPoolExecutor, actions: Sequence[Action], usage: S3Uri, batch: str,
                 clock: Callable[[], datetime]) -> None:
        self.s3, self.pool, self.clock = s3, pool, clock
        self.started = time.monotonic()
        self.outcomes = {a.index: Outcome(a) for a in actions}
        self.removed: dict[int, set[str]] = {a.index: set() for a in actions}
        self.hooked = {str(a.origin): a.index for a in actions if a.purge_webhook}
        self.ledger_dir = purge_ledger_dir(usage)
        self.ledger = purge_ledger(usage, batch)
        self.ledgers: dict[str, dict[str, list[str]]] = {}  # key -> {origin: paths} of every pending ledger read
        self.pending: dict[int, set[str]] = {}  # paths an earlier run removed and did not purge
        self.last_problem: dict[int, str] = {}

    def action(self, index: int) -> Action:
        return self.outcomes[index].action

    def live(self, indices: Iterable[int]) -> list[Action]:
        return [self.action(i) for i in indices if self.outcomes[i].error is None]

    def fail_hooked(self, why: str, indices: Iterable[int] | None = None) -> None:
        for i in self.hooked.values() if indices is None else indices:
            self.outcomes[i].fail(why)

    def read_ledgers(self) -> None:
        """Pending purges of this batch's origins, left by an earlier run of this or another batch.
        The folder is normally empty: a ledger is removed once its purges went through."""
        if not self.hooked:
            return
        try:
            keys = [key for key, _ in list_prefix(self.s3, self.ledger_dir).items() if key.endswith(".json")]
        except Exception as err:
            self.fail_hooked(f"listing the pending purges {self.ledger_dir}: {_describe(err)}")
            return
        uris = [self.ledger_dir.join(k) for k in keys]
        for uri, got in zip(uris, _gather(self.pool, lambda u: read_json(self.s3, u), uris), strict=True):
            if isinstance(got, Exception):
                self.fail_hooked(f"reading the pending purges {uri}: {_describe(got)}")
                continue
            purges = got.get("purges") if isinstance(got, dict) else None
            if not isinstance(purges, dict):
                continue
            self.ledgers[uri.key] = {str(o): [str(p) for p in paths] for o, paths in purges.items()}
            for origin, paths in self.ledgers[uri.key].items():
                if origin in self.hooked:
                    self.pending.setdefault(self.hooked[origin], set()).update(paths)

    def listed(self, todo: Sequence[Action]) -> dict[int, Listing]:
        """What is left under each origin; an empty one is verified now."""
        left: dict[int, Listing] = {}
        listings = list_prefixes(self.s3, self.pool, [a.origin for a in todo], THREADS)  # siblings by span
        for action, got in zip(todo, listings, strict=True):
            outcome = self.outcomes[action.index]
            if isinstance(got, Exception):
                outcome.fail(f"listing {action.origin}: {_describe(got)}")
            elif got:
                left[action.index] = got
            else:
                outcome.at = self.clock()
                outcome.seconds = time.monotonic() - self.started
        return left

    def write_ledger(self, remaining: dict[int, Listing]) -> None:
        """Before the first delete, the paths to purge go to this batch's ledger (one object): a
        re-run after a crash or a failed purge purges them though nothing is left to delete."""
        about = [i for i in remaining if self.action(i).purge_webhook]
        if not about:
            return
        purges = {str(self.action(i).origin): sorted(self.pending.get(i, set()) | set(remaining[i])) for i in about}
        previous = self.ledgers.get(self.ledger.key, {})
        purges = {**previous, **purges}
        try:
            _put_json(self.s3, self.ledger, {"purges": purges})
        except Exception as err:
            self.fail_hooked(f"writing the pending purges {self.ledger}: {_describe(err)}", about)
            for i in about:
                remaining.pop(i)
            return
        self.ledgers[self.ledger.key] = purges

    def delete_wave(self, keys: Mapping[int, list[str]]) -> set[int]:
        """One wave of every origin in DeleteObjects calls of up to 1000 keys, per bucket, in parallel;
        the origins with a key that was not deleted."""
        by_bucket: dict[str, list[tuple[int, str]]] = {}
        for i, wave in keys.items():
            origin = self.action(i).origin
            by_bucket.setdefault(origin.bucket, []).extend((i, origin.prefix + k) for k in wave)
        calls = [(bucket, entries[start:start + DELETE_BATCH]) for bucket, entries in by_bucket.items()
                 for start in range(0, len(entries), DELETE_BATCH)]
        answers = _gather(self.pool, lambda c: _delete(self.s3, c[0], [key for _, key in c[1]]), calls)
        stuck: set[int] = set()
        for (_, entries), refused in zip(calls, answers, strict=True):
            for i, key in entries:
                if isinstance(refused, Exception) or key in refused:
                    stuck.add(i)
                    self.last_problem[i] = _describe(refused) if isinstance(refused, Exception) else \
                        f"S3 refused to delete {key}"
                else:
                    self.outcomes[i].changed += 1
                    self.removed[i].add(key[len(self.action(i).origin.prefix):])
        return stuck

    def purge_all(self) -> None:
        todo = self.live(self.hooked.values())
        purged = set()
        for action, result in zip(todo, _gather(self.pool, self.purge_one, todo), strict=True):
            if isinstance(result, Exception):
                self.outcomes[action.index].fail(str(result) if isinstance(result, RuntimeError)
                                                 else _describe(result))
            else:
                purged.add(str(action.origin))
        self.clear_ledgers(purged)

    def purge_one(self, action: Action) -> None:
        assert action.purge_webhook is not None
        paths = sorted(self.pending.get(action.index, set()) | self.removed[action.index])
        self.outcomes[action.index].objects = len(paths)
        purge(action.purge_webhook, {"asset": action.asset, "target": action.target, "origin": str(action.origin),
                                     "paths": paths})
        self.outcomes[action.index].seconds = time.monotonic() - self.started  # done when purged

    def clear_ledgers(self, purged: set[str]) -> None:
        """Purged origins leave every ledger that named them; an empty ledger is removed. A ledger
        left behind (this fails) only makes a later takedown of its origins purge its paths again."""
        for key, purges in self.ledgers.items():
            if not purged & set(purges):
                continue
            left = {o: paths for o, paths in purges.items() if o not in purged}
            try:
                if left:
                    _put_json(self.s3, S3Uri(self.ledger.bucket, key), {"purges": left})
                else:
                    self.s3.delete_object(Bucket=self.ledger.bucket, Key=key)
            except Exception as err:
                log.warning("could not update the pending purges s3://%s/%s: %s", self.ledger.bucket, key,
                            _describe(err))


def wait_until(instant: datetime, clock: Callable[[], datetime]) -> None:
    """Back only once `clock()` has reached `instant` (a SIGTERM meanwhile ends the step: worker/steps.py)."""
    while (left := (instant - clock()).total_seconds()) > 0:
        time.sleep(min(left, 1.0))


def takedown_all(s3: Any, pool: ThreadPoolExecutor, actions: Sequence[Action], usage: S3Uri, batch: str,
                 clock: Callable[[], datetime], not_before: datetime | None = None) -> list[Outcome]:
    """List every origin, delete in waves (manifests first) and list again, up to TAKEDOWN_ROUNDS
    times, until empty; then purge. An action that fails leaves the others going. `not_before`: an armed
    batch lists ahead and then waits; nothing is deleted, and nothing counts as taken down, before then."""
    work = _Takedowns(s3, pool, actions, usage, batch, clock)
    work.read_ledgers()
    remaining = work.listed(work.live(work.outcomes))
    if not_before is not None:
        log.info("armed: %d origins listed (%d objects); deleting at %s", len(actions),
                 sum(len(keys) for keys in remaining.values()), iso(not_before))
        wait_until(not_before, clock)
        work.started = time.monotonic()
        for outcome in work.outcomes.values():
            if outcome.at is not None:  # empty when listed: verified now, at the end
                outcome.at, outcome.seconds = clock(), 0.0
    work.write_ledger(remaining)
    for _ in range(TAKEDOWN_ROUNDS):
        if not remaining:
            break
        waves = {i: takedown_order(keys) for i, keys in remaining.items()}
        for number in range(max(len(w) for w in waves.values())):
            stuck = work.delete_wave({i: w[number] for i, w in waves.items() if number < len(w)})
            # An origin whose manifests did not all go keeps its segments until the next round.
            waves = {i: w for i, w in waves.items() if i not in stuck}
        remaining = work.listed([work.action(i) for i in remaining])
    for i, keys in remaining.items():
        why = f" (last: {work.last_problem[i]})" if i in work.last_problem else ""
        work.outcomes[i].fail(f"{len(keys)} objects remain under {work.action(i).origin} after {TAKEDOWN_ROUNDS} "
                              f"delete rounds{why}")
    for i, paths in work.removed.items():
        work.outcomes[i].objects = len(paths)
    work.purge_all()
    return [work.outcomes[a.index] for a in actions]


def _log_line(outcome: Outcome) -> str:
    action = outcome.action
    line: dict[str, Any] = {"event": action.action, "asset": action.asset, "target": action.target,
                            "channel": action.channel, "verified": outcome.error is None, "objects": outcome.objects,
                            "copied" if action.action == "publish" else "deleted": outcome.changed,
                            "seconds": round(outcome.seconds, 3)}
    if outcome.error is not None:
        line["error"] = outcome.error
    return json.dumps(line, separators=(",", ":"))


def _bucket_problem(s3: Any, bucket: str) -> str | None:
    try:
        wait_until_reachable(s3, bucket, S3_RETRY_SECONDS)
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code"))
        if code in ("404", "NoSuchBucket"):
            return f"bucket {bucket} does not exist"
        return f"bucket {bucket}: {_describe(err)}"
    except Exception as err:
        return f"bucket {bucket} does not answer: {_describe(err)}"
    return None


def bucket_problems(s3: Any, batch: Batch) -> dict[str, str]:
    """Every bucket the batch touches, checked in parallel: the ones that do not answer (missing,
    AccessDenied, unreachable), with why. The library (the usage object's bucket) must answer — a
    batch that cannot record what it did does nothing — so its failure ends the run (exit 1)."""
    library = _bucket_problem(s3, batch.usage.bucket)
    if library is not None:
        if library.endswith("does not exist"):
            raise StepError(library)
        raise RuntimeError(library)
    others = sorted(({a.origin.bucket for a in batch.actions} | {a.package.bucket for a in batch.actions if a.package}
                     | {f.uri.bucket for f in batch.feeds}) - {batch.usage.bucket})
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        found = list(pool.map(lambda b: _bucket_problem(s3, b), others))
    return {bucket: why for bucket, why in zip(others, found, strict=True) if why is not None}


def _feeds_for(feed: Feed, action: Action) -> bool:
    """The feed that advertises the action's target: its origin's bucket, its channel."""
    return feed.uri.bucket == action.origin.bucket and feed_channel(feed.uri) == action.channel


@dataclass
class Report:
    outcomes: list[Outcome]  # every action's, in the batch's order

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]


def distribute(s3: Any, batch: Batch, clock: Callable[[], datetime],
               broken: Mapping[str, str] | None = None) -> Report:
    """Run the batch: every action that may run runs, even when others fail, so a bad package or a
    broken target never holds up the rest. Then the feeds (without the entries of publishes that
    failed) and the usage object with what verified and what failed. `broken`: buckets that did not
    answer (bucket_problems), whose actions and feeds fail without being tried."""
    broken = broken or {}
    outcomes = {a.index: Outcome(a) for a in batch.actions}
    for index, why in batch.refused.items():
        outcomes[index].fail(why, permanent=True)
    for action in batch.actions:
        for bucket in (action.origin.bucket, *([action.package.bucket] if action.package else [])):
            if bucket in broken:
                outcomes[action.index].fail(broken[bucket])
    runnable = [a for a in batch.actions if outcomes[a.index].error is None]
    publishes = [a for a in runnable if a.action == "publish"]
    takedowns = [a for a in runnable if a.action == "takedown"]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        # Takedowns first: ending availability is the obligation with a deadline.
        for outcome in takedown_all(s3, pool, takedowns, batch.usage, batch.batch, clock, batch.not_before):
            outcomes[outcome.action.index] = outcome
        for outcome in publish_all(s3, pool, publishes, clock):
            outcomes[outcome.action.index] = outcome
        withheld = {(o.action.asset, o.action.target) for o in outcomes.values()
                    if o.error is not None and o.action.action == "publish"}
        updated = clock()
        feeds = [f for f in batch.feeds if f.uri.bucket not in broken]
        written = _gather(pool, lambda f: _put_json(s3, f.uri, feed_document(f, updated, withheld)), feeds)
        unwritten = [(f, broken[f.uri.bucket]) for f in batch.feeds if f.uri.bucket in broken]
        unwritten += [(f, _describe(r)) for f, r in zip(feeds, written, strict=True) if isinstance(r, Exception)]
    for feed, why in unwritten:
        log.warning("feed %s not written: %s", feed.uri, why)
        for outcome in outcomes.values():
            if _feeds_for(feed, outcome.action):
                outcome.fail(f"writing the feed {feed.uri}: {why}")
    ordered = [outcomes[a.index] for a in batch.actions]
    for outcome in ordered:
        print(_log_line(outcome), flush=True)
    fresh = [usage_record(o.action, o.at, o.objects) for o in ordered if o.error is None and o.at is not None]
    prior = read_json(s3, batch.usage)
    prior_records = prior.get("records", []) if isinstance(prior, dict) else []
    report = Report(ordered)
    document = usage_document(batch, merge_usage(prior_records, fresh), complete=not report.failed)
    if report.failed:
        document["failures"] = [{"index": o.action.index, "action": o.action.action, "asset": o.action.asset,
                                 "target": o.action.target, "error": o.error, "permanent": o.permanent}
                                for o in report.failed]
    _put_json(s3, batch.usage, document)
    return report


def run() -> int:
    batch = load_feeds(parse_input(step_input()))
    s3 = make_client()
    report = distribute(s3, batch, lambda: datetime.now(UTC), bucket_problems(s3, batch))
    if report.failed:
        failed = [(o.action.index, o.error or "") for o in report.failed]
        summary = failure_summary([(o.action.name, o.error or "") for o in report.failed], len(batch.actions))
        print(f"distribute: {summary}", file=sys.stderr)
        write_result(failure_report(failed, summary, str(batch.usage)).to_wire())
        return PERMANENT_FAILURE_EXIT_CODE  # the rights planner retries the failed pairs, nobody else
    publishes = sum(a.action == "publish" for a in batch.actions)
    write_result(DistributeResult(published=publishes, taken_down=len(batch.actions) - publishes,
                                  usage=str(batch.usage)).to_wire())
    return 0

