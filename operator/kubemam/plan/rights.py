"""RightsWindow state from the clock: scheduled, open or closed, and when that next changes."""

from __future__ import annotations

from datetime import datetime

from kubemam.api.rights import RightsWindowSpec, RightsWindowStatus
from kubemam.plan.conditions import Verdict, apply_verdicts


def window_phase(spec: RightsWindowSpec, now: datetime) -> tuple[str, datetime | None]:
    """The phase at now and the next instant it changes (None once closed)."""
    if now < spec.start:
        return "Scheduled", spec.start
    if now < spec.end:
        return "Open", spec.end
    return "Closed", None


def plan_window(spec: RightsWindowSpec, status: RightsWindowStatus, generation: int, now: datetime,
                matched_assets: int) -> RightsWindowStatus:
    phase, next_transition = window_phase(spec, now)
    if matched_assets == 0:
        verdict = Verdict("Ready", "False", "NoAssetsMatched",
                          "the window's asset names and selector match no MediaAsset in this namespace")
    else:
        verdict = Verdict("Ready", "True", phase, f"{phase.lower()}; covers {matched_assets} assets")
    return status.model_copy(update={
        "phase": phase,
        "observed_generation": generation,
        "conditions": apply_verdicts(status.conditions, [verdict], generation, now),
        "matched_assets": matched_assets,
        "next_transition": next_transition,
    })
