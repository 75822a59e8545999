"""`kubemam report usage`: when each asset was available, per territory, from the usage records
the distribute worker writes (<library>/usage/<namespace>/<batch>.json).

A publish opens a period for its (namespace, asset, target, window); the next takedown of the
same four closes it. A publish while the period is open (a re-publish) changes nothing, a
takedown with no open period (its publish is not in the library) is ignored. One row per
territory of the opening publish; a period still open has no end.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubemam.storage.uri import S3Uri

FIELDS = ("namespace", "asset", "territory", "channel", "target", "window", "from", "to")
USAGE_DIR = "usage"
FORMATS = ("csv", "json")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; one without a zone is UTC."""
    moment = datetime.fromisoformat(text.strip())
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class UsageRow:
    namespace: str
    asset: str
    territory: str
    channel: str
    target: str
    window: str
    start: datetime
    end: datetime | None  # None: still published

    def as_dict(self) -> dict[str, str | None]:
        return {"namespace": self.namespace, "asset": self.asset, "territory": self.territory,
                "channel": self.channel, "target": self.target, "window": self.window,
                "from": format_time(self.start), "to": format_time(self.end) if self.end else None}


def _periods(records: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], datetime, datetime | None]]:
    """(opening publish, from, to or None) for every (namespace, asset, target, window)."""
    events: dict[tuple[str, str, str, str], list[tuple[datetime, int, Mapping[str, Any]]]] = {}
    for record in records:
        action = record.get("action")
        if action not in ("publish", "takedown"):
            continue
        key = (str(record.get("namespace", "")), str(record["asset"]), str(record["target"]), str(record["window"]))
        # At the same instant a publish sorts before a takedown: a zero-length period, not a lost one.
        events.setdefault(key, []).append((parse_time(str(record["at"])), 0 if action == "publish" else 1, record))
    periods: list[tuple[Mapping[str, Any], datetime, datetime | None]] = []
    for timeline in events.values():
        opened: tuple[datetime, Mapping[str, Any]] | None = None
        for at, order, record in sorted(timeline, key=lambda e: (e[0], e[1])):
            if order == 0 and opened is None:
                opened = (at, record)
            elif order == 1 and opened is not None:
                periods.append((opened[1], opened[0], at))
                opened = None
        if opened is not None:
            periods.append((opened[1], opened[0], None))
    return periods


def usage_rows(records: Iterable[Mapping[str, Any]], start: datetime, end: datetime) -> list[UsageRow]:
    """Pair publishes with takedowns into periods and keep those that overlap [start, end), clipped
    to it (an open period keeps no end). Each record carries its usage object's namespace."""
    rows = []
    for publish, begin, finish in _periods(records):
        if begin >= end or (finish is not None and (finish <= start or finish <= begin)):
            continue
        clipped_end = min(finish, end) if finish is not None else None
        for territory in publish.get("territories") or []:
            rows.append(UsageRow(namespace=str(publish.get("namespace", "")), asset=str(publish["asset"]),
                                 target=str(publish["target"]), window=str(publish["window"]),
                                 start=max(begin, start), territory=str(territory),
                                 channel=str(publish.get("channel", "")), end=clipped_end))
    return sorted(rows, key=lambda r: (r.namespace, r.asset, r.target, r.window, r.start, r.territory))


def read_records(s3: Any, library: S3Uri, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every record of every usage object under <library>/usage/[<namespace>/], with its namespace."""
    prefix = library.join(USAGE_DIR, namespace) if namespace else library.join(USAGE_DIR)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=prefix.prefix):
        keys += [obj["Key"] for obj in page.get("Contents", []) if obj["Key"].endswith(".json")]

    def load(key: str) -> list[dict[str, Any]]:
        body = s3.get_object(Bucket=prefix.bucket, Key=key)["Body"].read()
        try:
            document = json.loads(body)
        except ValueError as err:
            raise ValueError(f"s3://{prefix.bucket}/{key} is not JSON: {err}") from err
        if not isinstance(document, dict) or not isinstance(document.get("records"), list):
            raise ValueError(f"s3://{prefix.bucket}/{key} is not a usage object (no records list)")
        ns = str(document.get("namespace", ""))
        if namespace and ns != namespace:
            return []
        return [{**record, "namespace": ns} for record in document["records"] if isinstance(record, dict)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [record for records in pool.map(load, keys) for record in records]


def render(rows: Iterable[UsageRow], fmt: str) -> str:
    dicts = [row.as_dict() for row in rows]
    if fmt == "json":
        return json.dumps(dicts, indent=2) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: v if v is not None else "" for k, v in d.items()} for d in dicts)
    return out.getvalue()


def usage_report(start: datetime, end: datetime, fmt: str = "csv", library: str = "s3://kubemam-library",
                 namespace: str | None = None, s3: Any = None) -> str:
    """The report as text; S3 endpoint and credentials from the AWS_* environment unless s3 is given."""
    if s3 is None:
        from kubemam.storage.s3 import make_client

        s3 = make_client()
    records = read_records(s3, S3Uri.parse(library), namespace)
    return render(usage_rows(records, start, end), fmt)
