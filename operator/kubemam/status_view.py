"""What `kubemam status` and `kubemam describe ma` print, pure: objects as dicts (as the API server
returns them) and the clock in, text out. The CLI (cli.py) reads the objects.

Everything is read defensively from the dicts: a field the status does not have yet (or a field a
newer operator added) never breaks the view.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kubemam.plan.jobs import LABEL_STEP
from kubemam.plan.jobstate import job_state
from kubemam.steps.registry import STEPS
from kubemam.timestamps import parse_time

BAR_WIDTH = 10
MAX_TERRITORIES = 6
NONE = "-"


# --- small pieces ---------------------------------------------------------------------------------------




def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def span(seconds: float) -> str:
    """A duration in its two largest units: 45s, 3m 05s, 2h 10m, 4d 3h."""
    total = int(round(abs(seconds)))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


def relative(moment: datetime | None, now: datetime) -> str:
    """'in 3h 12m', '5m ago', 'now' (within a second)."""
    if moment is None:
        return NONE
    delta = (moment - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {span(delta)}" if delta > 0 else f"{span(delta)} ago"


def progress_bar(percent: Any, width: int = BAR_WIDTH) -> str:
    """[#####-----]  50%"""
    try:
        value = min(100, max(0, int(percent)))
    except (TypeError, ValueError):
        value = 0
    filled = value * width // 100
    return f"[{'#' * filled}{'-' * (width - filled)}] {value:3d}%"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], indent: str = "") -> str:
    """Columns padded to their widest cell (the last one is not padded)."""
    body = [list(headers)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in body) for i in range(len(headers))]
    lines = []
    for row in body:
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return "\n".join(lines)


def _status(body: Mapping[str, Any]) -> Mapping[str, Any]:
    status = body.get("status")
    return status if isinstance(status, Mapping) else {}


def _list(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def condition(body: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in _list(_status(body).get("conditions")) if c.get("type") == type_), None)


def _name(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name") or "?")


def _namespace(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("namespace") or "")


def _kbps(bits: Any) -> str:
    return f"{round(bits / 1000)} kb/s" if isinstance(bits, int | float) and not isinstance(bits, bool) else NONE


def _territories(codes: Any) -> str:
    codes = [str(c) for c in codes] if isinstance(codes, list) else []
    if len(codes) > MAX_TERRITORIES:
        return " ".join(codes[:MAX_TERRITORIES - 1]) + f" +{len(codes) - MAX_TERRITORIES + 1}"
    return " ".join(codes) or NONE


# --- an asset in one line -------------------------------------------------------------------------------


def asset_progress(status: Mapping[str, Any]) -> str:
    """The running step as a bar (`[#####-----]  50% transcode 42 fps ETA 1m 05s`), else what the
    asset waits for, else done/failed."""
    jobs = _list(status.get("jobs"))
    running = next((j for j in jobs if j.get("state") == "Running"), None)
    progress = status.get("progress") if isinstance(status.get("progress"), Mapping) else None
    if running is not None:
        step = str((progress or {}).get("step") or running.get("step") or "")
        text = f"{progress_bar((progress or {}).get('percent', 0))} {step}"
        fps = (progress or {}).get("fps")
        if isinstance(fps, int | float) and fps > 0:
            text += f" {fps:.0f} fps"
        eta = (progress or {}).get("etaSeconds")
        if isinstance(eta, int | float) and eta > 0:
            text += f" ETA {span(eta)}"
        return text
    pending = next((j for j in jobs if j.get("state") == "Pending"), None)
    if pending is not None:
        return f"queued {pending.get('step', '')}".rstrip()
    phase = status.get("phase")
    if phase == "Ready":
        return "done"
    if phase == "Failed":
        failed = next((j for j in reversed(jobs) if j.get("state") == "Failed"), None)
        return f"failed {failed.get('step', '')}".rstrip() if failed else "failed"
    return NONE


def _verified(copies: list[Mapping[str, Any]]) -> int:
    return sum(1 for c in copies if c.get("verifiedAt"))


def archive_summary(status: Mapping[str, Any], policy_min_copies: int | None = None) -> str:
    """`hot 2/3 verified` (tier, verified copies / the minimum), plus a restore or fixity failures."""
    storage = status.get("storage")
    if not isinstance(storage, Mapping) or not storage:
        return NONE
    copies = _list(storage.get("copies"))
    minimum = storage.get("minCopies") if isinstance(storage.get("minCopies"), int) else policy_min_copies
    parts = [str(storage["tier"])] if storage.get("tier") else []
    parts.append(f"{_verified(copies)}/{minimum} verified" if minimum else f"{_verified(copies)} verified")
    restore = storage.get("restore")
    if isinstance(restore, Mapping) and restore.get("state") in ("Restoring", "Failed"):
        parts.append(f"restore {str(restore['state']).lower()}")
    fixity = storage.get("fixity")
    if isinstance(fixity, Mapping) and fixity.get("failures"):
        parts.append(f"fixity failures {fixity['failures']}")
    return " ".join(parts)


def distribution_summary(status: Mapping[str, Any]) -> str:
    """Targets grouped by state: `Published svod-nordics, svod-no; TakenDown avod-uk`."""
    by_state: dict[str, list[str]] = {}
    for entry in _list(status.get("distribution")):
        by_state.setdefault(str(entry.get("state") or "?"), []).append(str(entry.get("target") or "?"))
    order = ("Published", "Pending", "Failed", "TakenDown")
    states = sorted(by_state, key=lambda s: (order.index(s) if s in order else len(order), s))
    return "; ".join(f"{state} {', '.join(sorted(by_state[state]))}" for state in states) or NONE


def qc_summary(status: Mapping[str, Any]) -> str:
    qc = status.get("qc")
    return str(qc.get("verdict") or NONE) if isinstance(qc, Mapping) else NONE


# --- windows --------------------------------------------------------------------------------------------


def window_state(body: Mapping[str, Any], now: datetime) -> tuple[str, str]:
    """(Scheduled|Open|Closed, the next transition: `closes in 2h 10m (2027-01-01 00:00:00Z)`), by the clock."""
    spec = body.get("spec") or {}
    start, end = parse_time(spec.get("start")), parse_time(spec.get("end"))
    if start is None or end is None:
        return str(_status(body).get("phase") or "?"), NONE
    if now < start:
        return "Scheduled", f"opens {relative(start, now)} ({stamp(start)})"
    if now < end:
        return "Open", f"closes {relative(end, now)} ({stamp(end)})"
    return "Closed", f"closed {relative(end, now)} ({stamp(end)})"


def _window_row(body: Mapping[str, Any], now: datetime) -> list[str]:
    spec = body.get("spec") or {}
    state, next_ = window_state(body, now)
    conflict = condition(body, "Conflict")
    if conflict is not None and conflict.get("status") == "True":
        state += " CONFLICT"
    channels = ",".join(str(c) for c in spec.get("channels") or []) or NONE
    matched = _status(body).get("matchedAssets")
    return [_name(body), state, channels, _territories(spec.get("territories")),
            str(matched) if matched is not None else NONE, next_]


# --- kubemam status -------------------------------------------------------------------------------------


def _sort_key(body: Mapping[str, Any]) -> tuple[str, str]:
    return _namespace(body), _name(body)


def _min_copies(asset: Mapping[str, Any], policies: Mapping[tuple[str, str], Mapping[str, Any]]) -> int | None:
    ref = ((asset.get("spec") or {}).get("archivePolicyRef") or {}).get("name")
    policy = policies.get((_namespace(asset), str(ref))) if ref else None
    value = (((policy or {}).get("spec") or {}).get("copies") or {}).get("minCopies")
    return value if isinstance(value, int) else None


def render_status(assets: Sequence[Mapping[str, Any]], windows: Sequence[Mapping[str, Any]],
                  policies: Sequence[Mapping[str, Any]], now: datetime, scope: str,
                  all_namespaces: bool = False) -> str:
    """The `kubemam status` screen: assets (phase, progress bar, QC, archive, distribution) and windows
    (state and next transition). `scope` names what was listed (a namespace, or 'all namespaces')."""
    by_policy = {(_namespace(p), _name(p)): p for p in policies}
    lead = ["NAMESPACE"] if all_namespaces else []
    lines = [f"kubemam status: {scope} at {stamp(now)}", ""]
    if assets:
        rows = []
        for body in sorted(assets, key=_sort_key):
            status = _status(body)
            rows.append(([_namespace(body)] if all_namespaces else []) + [
                _name(body), str(status.get("phase") or "Pending"), asset_progress(status), qc_summary(status),
                archive_summary(status, _min_copies(body, by_policy)), distribution_summary(status)])
        lines.append(f"ASSETS ({len(assets)})")
        lines.append(table(lead + ["NAME", "PHASE", "PROGRESS", "QC", "ARCHIVE", "DISTRIBUTION"], rows, "  "))
    else:
        lines.append("ASSETS: none")
    lines.append("")
    if windows:
        rows = [([_namespace(w)] if all_namespaces else []) + _window_row(w, now)
                for w in sorted(windows, key=_sort_key)]
        lines.append(f"WINDOWS ({len(windows)})")
        lines.append(table(lead + ["NAME", "STATE", "CHANNELS", "TERRITORIES", "ASSETS", "NEXT"], rows, "  "))
    else:
        lines.append("WINDOWS: none")
    return "\n".join(lines) + "\n"


# --- kubemam describe ma --------------------------------------------------------------------------------


def _tree(items: Sequence[tuple[str, Sequence[str]]], prefix: str = "") -> list[str]:
    """Each item: its line and its detail lines (indented under it, inside the tree's rails)."""
    lines = []
    for i, (head, details) in enumerate(items):
        last = i == len(items) - 1
        lines.append(f"{prefix}{'└─ ' if last else '├─ '}{head}")
        lines.extend(f"{prefix}{'   ' if last else '│  '}{detail}" for detail in details)
    return lines


def _technical(status: Mapping[str, Any]) -> str:
    tech = status.get("technical")
    if not isinstance(tech, Mapping):
        return ""
    parts = []
    if tech.get("container"):
        parts.append(str(tech["container"]).split(",")[0])  # ffprobe's format list: mov,mp4,m4a,… → mov
    if isinstance(tech.get("durationSeconds"), int | float):
        parts.append(f"{tech['durationSeconds']:.2f} s")
    video = tech.get("video")
    if isinstance(video, Mapping):
        parts.append(f"{video.get('codec', '?')} {video.get('width', '?')}x{video.get('height', '?')}"
                     + (f" @{video['frameRate']}" if video.get("frameRate") else ""))
    audio = _list(tech.get("audio"))
    if audio:
        parts.append(f"{len(audio)} audio track{'s' if len(audio) > 1 else ''}")
    return ", ".join(parts)


def _qc_line(status: Mapping[str, Any]) -> str | None:
    qc = status.get("qc")
    if not isinstance(qc, Mapping):
        return None
    issues = _list(qc.get("issues"))
    count = qc.get("issueCount") if isinstance(qc.get("issueCount"), int) else len(issues)
    text = f"QC {qc.get('verdict', '?')} ({count} issue{'' if count == 1 else 's'}"
    errors = sorted({str(i.get("check")) for i in issues if i.get("severity") == "error"})
    text += f"; failed: {', '.join(errors)})" if errors else ")"
    loudness: Mapping[str, Any] = qc["loudness"] if isinstance(qc.get("loudness"), Mapping) else {}
    if isinstance(loudness.get("integratedLufs"), int | float):
        text += f", {loudness['integratedLufs']:.1f} LUFS"
    if isinstance(loudness.get("truePeakDbtp"), int | float):
        text += f", {loudness['truePeakDbtp']:.1f} dBTP"
    return text


def _publishable(body: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    """The QC gate: held (and how to sign off), or who signed a failed QC off, when and why."""
    gate = condition(body, "Publishable")
    if not gate:
        return NONE
    approval = status.get("qcApproval")
    if gate.get("status") == "True" and isinstance(approval, Mapping):
        return f"yes — QC failed, approved by {approval.get('by')} at {approval.get('at')}: {approval.get('reason')}"
    if gate.get("status") == "True":
        return f"yes ({gate.get('reason', '')})"
    return f"no ({gate.get('reason', '')}) — {' '.join(str(gate.get('message') or '').split())}"


def _renditions(status: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    rows = []
    for r in _list(status.get("renditions")):
        size = (f"{r['width']}x{r['height']}" if r.get("width") and r.get("height")
                else "audio" if r.get("kind") == "audio" else NONE)
        rows.append([str(r.get("name", "?")), str(r.get("codec") or NONE), size, _kbps(r.get("bitrate"))])
    if not rows:
        return []
    return [(line, []) for line in table(["NAME", "CODEC", "SIZE", "BITRATE"], rows).splitlines()[1:]]


def _packages(status: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    items = []
    for p in _list(status.get("packages")):
        details = []
        systems = [str(s) for s in p.get("drmSystems") or []]
        if systems:
            scheme = f" ({p['scheme']})" if p.get("scheme") else ""
            details.append(f"DRM {', '.join(systems)}{scheme}")
            key_ids = [str(k) for k in p.get("keyIds") or []]
            if key_ids:
                details.append(f"key IDs {', '.join(key_ids)}")
        else:
            details.append("clear (no DRM)")
        items.append((f"{p.get('format', '?')}  {p.get('manifestUri', NONE)}", details))
    return items


def _copies(status: Mapping[str, Any], now: datetime) -> tuple[str, list[tuple[str, list[str]]]]:
    storage = status.get("storage")
    if not isinstance(storage, Mapping):
        return "", []
    items = []
    for c in _list(storage.get("copies")):
        verified = parse_time(c.get("verifiedAt"))
        state = f"verified {relative(verified, now)}" if verified else "not verified"
        if verified and c.get("verifiedBy"):
            state += f" by {c['verifiedBy']}"
        flags = " offsite" if c.get("offsite") else ""
        items.append((f"{c.get('location', '?')}  {c.get('storageClass') or NONE}{flags}  {state}",
                      [str(c["uri"])] if c.get("uri") else []))
    master = storage.get("preservationMaster")
    if isinstance(master, Mapping) and master.get("uri"):
        items.append((f"preservation master  {master.get('codec', '?')}  "
                      f"{'verified' if master.get('verified') else 'not verified'}", [str(master["uri"])]))
    return archive_summary(status), items


def _distribution(status: Mapping[str, Any], now: datetime) -> list[tuple[str, list[str]]]:
    items = []
    for d in _list(status.get("distribution")):
        since = parse_time(d.get("since"))
        head = f"{d.get('target', '?')}  {d.get('state', '?')}" + (f" {relative(since, now)}" if since else "")
        details = [f"{d.get('channel', '?')}; {_territories(d.get('territories'))}; window {d.get('window', '?')}"]
        if d.get("origin"):
            details.append(str(d["origin"]))
        held = d.get("quarantine")
        if isinstance(held, Mapping):
            retry = parse_time(held.get("retryAt"))
            head += f"  QUARANTINED ({held.get('action', '?')}, {held.get('attempts', '?')} attempts)"
            details.append(f"retry {relative(retry, now) if retry else '?'}: "
                           + " ".join(str(held.get("error") or "").split())[:120])
        items.append((head, details))
    return items


def _section(title: str, items: list[tuple[str, list[str]]], empty: str = "none yet") -> tuple[str, list[str]]:
    return (f"{title} ({len(items)})" if items else f"{title}: {empty}"), _tree(items) if items else []


def _live_state(job: Mapping[str, Any]) -> str:
    state, _ = job_state(dict(job))
    return "Suspended" if state == "Pending" and (job.get("spec") or {}).get("suspend") else state


def _job_rows(status: Mapping[str, Any], jobs: Sequence[Mapping[str, Any]], now: datetime) -> list[list[str]]:
    """The asset's step Jobs: those its status records (also ones since deleted), then the live Jobs it
    owns that the status no longer lists (a finished transcode once every rendition is in)."""
    recorded = {str(j.get("name")): j for j in _list(status.get("jobs"))}
    live = {_name(j): j for j in jobs}
    names = [n for n in recorded if n not in live] + [
        _name(j) for j in sorted(jobs, key=lambda j: str((j.get("metadata") or {}).get("creationTimestamp") or ""))]
    rows = []
    for name in names:
        record, job = recorded.get(name) or {}, live.get(name) or {}
        job_status = job.get("status") or {}
        started = parse_time(job_status.get("startTime"))
        ended = parse_time(job_status.get("completionTime")) or next(
            (parse_time(c.get("lastTransitionTime")) for c in _list(job_status.get("conditions"))
             if c.get("type") == "Failed" and c.get("status") == "True"), None)
        took = span(((ended or now) - started).total_seconds()) if started else NONE
        step = record.get("step") or ((job.get("metadata") or {}).get("labels") or {}).get(LABEL_STEP) or "?"
        step = step if step in STEPS else f"{step} (unknown step)"
        state = record.get("state") or (_live_state(job) if job else "?")
        message = " ".join(str(record.get("message") or "").split())
        rows.append([str(step), name, str(state), took, message[:100] + ("…" if len(message) > 100 else "")])
    return rows


def render_asset(body: Mapping[str, Any], now: datetime, jobs: Sequence[Mapping[str, Any]] = (),
                 policy: Mapping[str, Any] | None = None) -> str:
    """`kubemam describe ma`: the asset's lineage, source → renditions → packages → copies →
    distribution, then its conditions and step Jobs (durations from the live Jobs when given)."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = _status(body)
    ready = condition(body, "Ready")
    lines = [f"MediaAsset {meta.get('namespace', '?')}/{meta.get('name', '?')}"]
    facts = [("Title", str((spec.get("metadata") or {}).get("title") or NONE)),
             ("Phase", str(status.get("phase") or "Pending")
              + (f"  (Ready={ready.get('status')} {ready.get('reason', '')})" if ready else "")),
             ("Progress", asset_progress(status)),
             ("Publishable", _publishable(body, status)),
             ("Ladder", str((spec.get("ladderRef") or {}).get("name") or NONE)),
             ("Archive policy", str((spec.get("archivePolicyRef") or {}).get("name") or NONE)),
             ("Created", relative(parse_time(meta.get("creationTimestamp")), now))]
    lines += [f"  {label + ':':<16}{value}" for label, value in facts]

    lines += ["", "Lineage"]
    source = spec.get("source") or {}
    lines.append(f"source  {source.get('uri', '?')}")
    checksum = (source.get("checksum") or {})
    sha256 = (checksum.get("value") if checksum.get("algorithm", "sha256") == "sha256" else None) or (
        (status.get("technical") or {}).get("sha256") if isinstance(status.get("technical"), Mapping) else None)
    rail = "│       "
    lines.append(f"{rail}sha256 {sha256 or NONE}")
    technical = _technical(status)
    if technical:
        lines.append(f"{rail}{technical}")
    qc = _qc_line(status)
    if qc:
        lines.append(f"{rail}{qc}")
    archive, copies = _copies(status, now)
    policy_min = (((policy or {}).get("spec") or {}).get("copies") or {}).get("minCopies")
    if isinstance(policy_min, int) and archive:
        archive = archive_summary(status, policy_min)
    sections = [
        _section("renditions", _renditions(status)),
        _section("packages", _packages(status)),
        (f"copies ({archive})" if copies else "copies: not archived", _tree(copies) if copies else []),
        _section("distribution", _distribution(status, now), "not distributed"),
    ]
    lines += _tree(sections)

    conditions = [[str(c.get("type", "?")), str(c.get("status", "?")), str(c.get("reason", "")),
                   relative(parse_time(c.get("lastTransitionTime")), now),
                   " ".join(str(c.get("message") or "").split())[:100]] for c in _list(status.get("conditions"))]
    lines += ["", "Conditions" + ("" if conditions else ": none yet")]
    if conditions:
        lines.append(table(["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], conditions, "  "))
    job_rows = _job_rows(status, jobs, now)
    lines += ["", "Jobs" + ("" if job_rows else ": none yet")]
    if job_rows:
        lines.append(table(["STEP", "NAME", "STATE", "TOOK", "MESSAGE"], job_rows, "  "))
    return "\n".join(lines) + "\n"
