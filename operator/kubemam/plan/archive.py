"""ArchivePolicy checks the schema cannot make (tier order, loops), as conditions."""

from __future__ import annotations

from datetime import datetime

from kubemam.api.archive import ArchivePolicySpec, ArchivePolicyStatus
from kubemam.plan.conditions import apply_verdicts, ready_verdict
from kubemam.plan.schedule import ScheduleError, parse


def policy_problems(spec: ArchivePolicySpec) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    first, *later = spec.tiers
    if first.transition is not None and first.transition.after_days > 0:
        problems.append(("InvalidTierOrder", f"tier {first.name!r} is the first (hot) tier and cannot wait "
                                             f"{first.transition.after_days} days for a transition"))
    previous = 0.0
    for tier in later:
        if tier.transition is None:
            problems.append(("InvalidTierOrder", f"tier {tier.name!r} needs a transition (only the first "
                                                 "tier has none)"))
            continue
        if tier.transition.after_days <= previous:
            problems.append(("InvalidTierOrder", f"tier {tier.name!r} transitions after "
                                                 f"{tier.transition.after_days} days, not after the tier "
                                                 f"before it ({previous} days)"))
        previous = tier.transition.after_days
    places = [(t.location, t.storage_class) for t in spec.tiers]
    for index, place in enumerate(places):
        if place in places[:index]:
            problems.append(("TierLoop", f"tier {spec.tiers[index].name!r} moves content back to "
                                         f"{place[0]}/{place[1]}, where an earlier tier keeps it"))
    # Two names for one place would let a move "vacate" the very copy it keeps.
    for index, loc in enumerate(spec.locations):
        for other in spec.locations[:index]:
            same_server = (loc.endpoint or "") == (other.endpoint or "")
            a, b = loc.uri.rstrip("/") + "/", other.uri.rstrip("/") + "/"
            if same_server and (a.startswith(b) or b.startswith(a)):
                problems.append(("OverlappingLocations", f"locations {other.name!r} and {loc.name!r} share storage "
                                                         f"({other.uri} and {loc.uri})"))
    if spec.fixity is not None:
        try:
            parse(spec.fixity.schedule)
        except ScheduleError as err:
            problems.append(("InvalidSchedule", f"fixity.schedule: {err}"))
    return problems


def plan_policy(spec: ArchivePolicySpec, status: ArchivePolicyStatus, generation: int,
                now: datetime, assets_covered: int, under_replicated: int = 0) -> ArchivePolicyStatus:
    problems = policy_problems(spec)
    verdict = ready_verdict(problems, f"{len(spec.tiers)} tiers over {len(spec.locations)} locations")
    return status.model_copy(update={
        "phase": "Invalid" if problems else "Active",
        "observed_generation": generation,
        "conditions": apply_verdicts(status.conditions, [verdict], generation, now),
        "assets_covered": assets_covered,
        "under_replicated": under_replicated,
    })
