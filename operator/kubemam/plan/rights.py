"""RightsWindow state from the clock: scheduled, open or closed, and when that next changes."""

from __future__ import annotations

from datetime import datetime

from kubemam.api.distribution import TARGETS_CONFIGMAP
from kubemam.api.rights import HistoryEntry, RightsWindowSpec, RightsWindowStatus
from kubemam.plan.conditions import Verdict, apply_verdicts
from kubemam.plan.staging import serialize, utf8_size

# status.history is a short tail: the newest entries, at most MAX_HISTORY and MAX_HISTORY_BYTES (UTF-8, as
# serialized; a worldwide target's entry is ~1.4 KB), so a window's status never nears etcd's 1.5 MiB.
# The whole history is the usage records the distribute worker writes (<library>/usage/<namespace>/),
# read by `kubemam report usage`.
MAX_HISTORY = 100
MAX_HISTORY_BYTES = 64 * 1024
MAX_CONFLICTS = 5  # named in the Conflict condition; the rest are counted


def window_phase(spec: RightsWindowSpec, now: datetime) -> tuple[str, datetime | None]:
    """The phase at now and the next instant it changes (None once closed)."""
    if now < spec.start:
        return "Scheduled", spec.start
    if now < spec.end:
        return "Open", spec.end
    return "Closed", None


def targets_verdict(problem: str | None, targets: int) -> Verdict:
    """TargetsValid: the namespace's distribution targets, judged once for all its windows."""
    if problem:
        return Verdict("TargetsValid", "False", "InvalidTargets", problem)
    if targets == 0:
        return Verdict("TargetsValid", "True", "NoTargets",
                       f"no distribution targets (ConfigMap {TARGETS_CONFIGMAP} is absent or lists none)")
    plural = "" if targets == 1 else "s"
    return Verdict("TargetsValid", "True", "Valid", f"{targets} distribution target{plural} in ConfigMap "
                   f"{TARGETS_CONFIGMAP}")


def _key(entry: HistoryEntry) -> tuple[object, ...]:
    return entry.at, entry.action, entry.asset, entry.target, entry.channel, tuple(entry.territories)


def history_tail(entries: list[HistoryEntry]) -> list[HistoryEntry]:
    """The newest entries that fit MAX_HISTORY and MAX_HISTORY_BYTES, oldest first."""
    kept: list[HistoryEntry] = []
    size = 0
    for entry in reversed(entries[-MAX_HISTORY:]):
        size += utf8_size(serialize(entry.to_wire())) + 1
        if size > MAX_HISTORY_BYTES:
            break
        kept.append(entry)
    return kept[::-1]


def plan_window(spec: RightsWindowSpec, status: RightsWindowStatus, generation: int, now: datetime,
                matched_assets: int, conflicts: list[str] | None = None,
                history: list[HistoryEntry] | None = None, targets: Verdict | None = None,
                distributed: Verdict | None = None) -> RightsWindowStatus:
    """The window's whole desired status. `history` is what finished since; an entry already in the
    status is not added again (a Job recorded twice, after a crash before it was marked, adds nothing).
    `distributed`: the Distributed condition (its quarantined publishes and takedowns)."""
    phase, next_transition = window_phase(spec, now)
    verdicts = []
    if conflicts:
        verdicts.append(Verdict("Conflict", "True", "ExclusiveOverlap",
                                "overlaps an exclusive licence on the same territory, channel and time: "
                                + "; ".join(conflicts[:MAX_CONFLICTS])
                                + (f"; and {len(conflicts) - MAX_CONFLICTS} more" if len(conflicts) > MAX_CONFLICTS
                                   else "") + " (the overlap is not published)"))
        verdicts.append(Verdict("Ready", "False", "Conflict", "exclusive windows overlap; see the Conflict condition"))
    else:
        verdicts.append(Verdict("Conflict", "False", "NoConflict", "no exclusive overlap"))
        if matched_assets == 0:
            verdicts.append(Verdict("Ready", "False", "NoAssetsMatched",
                                    "the window's asset names and selector match no MediaAsset in this namespace"))
        else:
            verdicts.append(Verdict("Ready", "True", phase, f"{phase.lower()}; covers {matched_assets} assets"))
    if targets is not None:
        verdicts.append(targets)
    if distributed is not None:
        verdicts.append(distributed)
    # History is an audit trail: appended, never rewritten; status keeps its newest tail (history_tail).
    kept = list(status.history or [])
    seen = {_key(h) for h in kept}
    for entry in history or []:
        if _key(entry) not in seen:
            seen.add(_key(entry))
            kept.append(entry)
    kept = history_tail(kept)
    return status.model_copy(update={
        "phase": phase,
        "observed_generation": generation,
        "conditions": apply_verdicts(status.conditions, verdicts, generation, now),
        "matched_assets": matched_assets,
        "next_transition": next_transition,
        "history": kept or None,
    })
