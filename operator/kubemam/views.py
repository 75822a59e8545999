"""Machine-readable views (`-o json|yaml`) and `kubemam describe` for ladders, windows and policies.

Pure like status_view.py: objects as dicts and the clock in. The documents carry the same facts as the
tables, as values a script can rely on (numbers as numbers, times as RFC 3339), never keys or secrets —
the objects they quote hold key IDs and Secret names only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import yaml

from kubemam.status_view import (
    NONE,
    _list,
    _name,
    _namespace,
    _sort_key,
    _status,
    _territories,
    archive_summary,
    condition,
    relative,
    stamp,
    table,
    window_state,
)
from kubemam.timestamps import parse_time


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def dump(document: Any, output: str) -> str:
    """JSON (indented, stable key order) or YAML, each ending in a newline."""
    if output == "json":
        return json.dumps(document, indent=2, sort_keys=True, default=str) + "\n"
    return str(yaml.safe_dump(document, sort_keys=True, default_flow_style=False))


def _ready(body: Mapping[str, Any]) -> dict[str, Any] | None:
    ready = condition(body, "Ready")
    if ready is None:
        return None
    return {"status": ready.get("status"), "reason": ready.get("reason"), "message": ready.get("message")}


def asset_summary(body: Mapping[str, Any], min_copies: int | None = None) -> dict[str, Any]:
    status = _status(body)
    storage: Mapping[str, Any] = status["storage"] if isinstance(status.get("storage"), Mapping) else {}
    copies = _list(storage.get("copies"))
    running = next((j for j in _list(status.get("jobs")) if j.get("state") in ("Running", "Pending")), None)
    qc = status.get("qc") if isinstance(status.get("qc"), Mapping) else None
    return {
        "namespace": _namespace(body), "name": _name(body), "phase": status.get("phase") or "Pending",
        "ready": _ready(body),
        "step": ({"step": running.get("step"), "state": running.get("state"), "job": running.get("name")}
                 if running else None),
        "progress": status.get("progress"),
        "qc": {"verdict": qc.get("verdict"), "issueCount": qc.get("issueCount")} if qc else None,
        "archive": ({"tier": storage.get("tier"), "verifiedCopies": sum(1 for c in copies if c.get("verifiedAt")),
                     "minCopies": storage.get("minCopies") or min_copies} if storage else None),
        "distribution": [{k: d.get(k) for k in ("target", "channel", "state", "since", "window")}
                         for d in _list(status.get("distribution"))],
    }


def window_summary(body: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    spec = body.get("spec") or {}
    state, _ = window_state(body, now)
    start, end = parse_time(spec.get("start")), parse_time(spec.get("end"))
    following = start if start and now < start else end if end and now < end else None
    conflict = condition(body, "Conflict")
    return {
        "namespace": _namespace(body), "name": _name(body), "state": state, "ready": _ready(body),
        "conflict": bool(conflict and conflict.get("status") == "True"),
        "channels": list(spec.get("channels") or []), "territories": list(spec.get("territories") or []),
        "start": spec.get("start"), "end": spec.get("end"),
        "nextTransition": rfc3339(following) if following else None,
        "matchedAssets": _status(body).get("matchedAssets"),
    }


def status_document(assets: Sequence[Mapping[str, Any]], windows: Sequence[Mapping[str, Any]],
                     policies: Sequence[Mapping[str, Any]], now: datetime, scope: str) -> dict[str, Any]:
    """`kubemam status -o json|yaml`: the same assets and windows as the table."""
    minimums = {(_namespace(p), _name(p)): ((p.get("spec") or {}).get("copies") or {}).get("minCopies")
                for p in policies}

    def min_copies(asset: Mapping[str, Any]) -> int | None:
        ref = ((asset.get("spec") or {}).get("archivePolicyRef") or {}).get("name")
        value = minimums.get((_namespace(asset), str(ref))) if ref else None
        return value if isinstance(value, int) else None

    return {"scope": scope, "at": rfc3339(now),
            "assets": [asset_summary(a, min_copies(a)) for a in sorted(assets, key=_sort_key)],
            "windows": [window_summary(w, now) for w in sorted(windows, key=_sort_key)]}


def job_summary(job: Mapping[str, Any]) -> dict[str, Any]:
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    return {"name": meta.get("name"), "step": (meta.get("labels") or {}).get("kubemam.io/step"),
            "startTime": status.get("startTime"), "completionTime": status.get("completionTime"),
            "active": status.get("active") or 0, "succeeded": status.get("succeeded") or 0,
            "failed": status.get("failed") or 0,
            "conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message")}
                           for c in _list(status.get("conditions"))]}


def describe_document(body: Mapping[str, Any], related: Mapping[str, Any]) -> dict[str, Any]:
    """`kubemam describe KIND NAME -o json|yaml`: the object as the API server holds it, and what the table
    shows beside it (the asset's Jobs, the assets a ladder, window or policy covers)."""
    meta = dict(body.get("metadata") or {})
    # Kopf's bookkeeping annotations say nothing to a reader and can be long: left out.
    meta["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items()
                           if not k.startswith("kubemam.io/")}
    meta.pop("managedFields", None)
    return {"kind": body.get("kind"), "object": {**body, "metadata": meta}, **related}


# --- describe for the other kinds -----------------------------------------------------------------------


def _conditions(body: Mapping[str, Any], now: datetime) -> list[str]:
    rows = [[str(c.get("type", "?")), str(c.get("status", "?")), str(c.get("reason", "")),
             relative(parse_time(c.get("lastTransitionTime")), now),
             " ".join(str(c.get("message") or "").split())[:100]] for c in _list(_status(body).get("conditions"))]
    lines = ["", "Conditions" + ("" if rows else ": none yet")]
    if rows:
        lines.append(table(["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], rows, "  "))
    return lines


def _header(kind: str, body: Mapping[str, Any], facts: list[tuple[str, str]], now: datetime) -> list[str]:
    meta = body.get("metadata") or {}
    ready = condition(body, "Ready")
    facts = [("Ready", f"{ready.get('status')} {ready.get('reason', '')}".strip() if ready else NONE), *facts,
             ("Created", relative(parse_time(meta.get("creationTimestamp")), now))]
    return [f"{kind} {meta.get('namespace', '?')}/{meta.get('name', '?')}",
            *(f"  {label + ':':<16}{value}" for label, value in facts)]


def _assets(names: Sequence[str]) -> list[str]:
    return ["", f"Assets ({len(names)})" if names else "Assets: none", *(f"  {n}" for n in sorted(names))]


def render_ladder(body: Mapping[str, Any], assets: Sequence[str], now: datetime) -> str:
    spec = body.get("spec") or {}
    rungs = [[str(r.get("name")), str(r.get("codec")), f"{r.get('width')}x{r.get('height')}",
              str((r.get("rateControl") or {}).get("mode", NONE)),
              str((r.get("rateControl") or {}).get("bitrateKbps") or (r.get("rateControl") or {}).get("crf") or NONE)]
             for r in _list(spec.get("renditions"))]
    audio = [[str(a.get("name")), str(a.get("codec") or "aac"), "audio", str(a.get("language") or NONE),
              str(a.get("bitrateKbps") or NONE)] for a in _list(spec.get("audio"))]
    drm = spec.get("drm") or {}
    chunking = spec.get("chunking") or {}
    lines = _header("TranscodeLadder", body, [
        ("Segments", f"{spec.get('segmentDurationSeconds', 6)} s"),
        ("Packaging", ", ".join((spec.get("packaging") or {}).get("formats") or []) or NONE),
        ("DRM", f"{drm.get('scheme')} {', '.join(drm.get('systems') or [])}" if drm else "clear"),
        ("Chunking", f"{chunking.get('chunkSeconds', 60)} s chunks, {chunking.get('maxParallel', 4)} at a time"
         if chunking else "one pass"),
    ], now)
    lines += ["", "Renditions", table(["NAME", "CODEC", "SIZE", "RATE", "KBPS|CRF"], rungs + audio, "  ")]
    return "\n".join(lines + _conditions(body, now) + _assets(assets)) + "\n"


def _selector(selector: Mapping[str, Any]) -> str:
    """A label selector as kubectl's -l spells it: `series=coastal,tier in (gold,silver)`."""
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in _list(selector.get("matchExpressions")):
        key, operator, values = expression.get("key"), str(expression.get("operator")), expression.get("values") or []
        terms.append({"Exists": f"{key}", "DoesNotExist": f"!{key}"}.get(operator)
                     or f"{key} {operator.lower()} ({','.join(str(v) for v in values)})")
    return ",".join(terms) or "every asset"


def render_window(body: Mapping[str, Any], now: datetime) -> str:
    spec = body.get("spec") or {}
    state, following = window_state(body, now)
    selection = spec.get("assets") or {}
    chosen = ", ".join(selection.get("names") or []) or _selector(selection.get("selector") or {})
    lines = _header("RightsWindow", body, [
        ("State", state), ("Next", following), ("Channels", ", ".join(spec.get("channels") or []) or NONE),
        ("Territories", _territories(spec.get("territories"))), ("Exclusive", str(bool(spec.get("exclusive")))),
        ("Selects", chosen), ("Matched", str(_status(body).get("matchedAssets", NONE))),
    ], now)
    history = _list(_status(body).get("history"))[-10:]
    rows = [[str(h.get("at")), str(h.get("action")), str(h.get("asset")), str(h.get("target")),
             str(h.get("channel")), "yes" if h.get("verified") else "no"] for h in history]
    lines += ["", f"History (last {len(rows)})" if rows else "History: none yet"]
    if rows:
        lines.append(table(["AT", "ACTION", "ASSET", "TARGET", "CHANNEL", "VERIFIED"], rows, "  "))
    return "\n".join(lines + _conditions(body, now)) + "\n"


def _transition(transition: Any) -> str:
    if not isinstance(transition, Mapping):
        return "start"
    since = "last use" if transition.get("since") == "lastUse" else "ingest"
    return f"{transition.get('afterDays', 0)} days after {since}"


def render_policy(body: Mapping[str, Any], assets: Sequence[Mapping[str, Any]], now: datetime) -> str:
    spec = body.get("spec") or {}
    copies = spec.get("copies") or {}
    locations = [[str(loc.get("name")), str(loc.get("uri")), str(loc.get("site") or NONE),
                  "yes" if loc.get("offsite") else "no", "yes" if loc.get("objectLock") else "no"]
                 for loc in _list(spec.get("locations"))]
    tiers = [[str(t.get("name")), _transition(t.get("transition")), str(t.get("location")),
              str(t.get("storageClass") or "STANDARD")] for t in _list(spec.get("tiers"))]
    lines = _header("ArchivePolicy", body, [
        ("Copies", f"min {copies.get('minCopies', 1)}" + (", one offsite" if copies.get("requireOffsite") else "")),
        ("Fixity", str((spec.get("fixity") or {}).get("schedule") or NONE)),
        ("Retention", f"{(spec.get('retention') or {}).get('days')} days" if spec.get("retention") else NONE),
    ], now)
    lines += ["", "Locations", table(["NAME", "URI", "SITE", "OFFSITE", "OBJECT LOCK"], locations, "  ")]
    lines += ["", "Tiers", table(["NAME", "FROM", "LOCATION", "CLASS"], tiers, "  ")]
    rows = [[_name(a), archive_summary(_status(a), copies.get("minCopies"))] for a in sorted(assets, key=_sort_key)]
    lines += ["", f"Assets ({len(rows)})" if rows else "Assets: none"]
    if rows:
        lines.append(table(["NAME", "ARCHIVE"], rows, "  "))
    return "\n".join(lines + _conditions(body, now)) + "\n"


__all__ = ["describe_document", "dump", "render_ladder", "render_policy", "render_window",
           "status_document", "stamp"]
