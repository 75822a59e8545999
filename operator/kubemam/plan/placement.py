"""Where an asset's archived set belongs now: the tier its age puts it in and minCopies places.

Pure: the policy, the asset's times and the clock in; tier and target locations out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from kubemam.api.archive import ArchivePolicySpec, Location, Tier

DEFAULT_STORAGE_CLASS = "STANDARD"


@dataclass(frozen=True)
class AssetClock:
    """The moments tier transitions count from."""

    ingested_at: datetime
    last_used_at: datetime | None = None  # last publish or restore
    restored_at: datetime | None = None  # a restore request: every tier counts from it

    def reference(self, tier: Tier) -> datetime:
        since = tier.transition.since if tier.transition else "ingest"
        base = self.ingested_at if since == "ingest" else max(self.ingested_at, self.last_used_at or self.ingested_at)
        return max(base, self.restored_at) if self.restored_at else base


def transition_time(tier: Tier, clock: AssetClock) -> datetime | None:
    if tier.transition is None:
        return None
    return clock.reference(tier) + timedelta(days=tier.transition.after_days)


def current_tier(policy: ArchivePolicySpec, clock: AssetClock, now: datetime) -> int:
    """Index of the furthest tier whose transition has passed (0, the hot tier, when none has)."""
    index = 0
    for position, tier in enumerate(policy.tiers[1:], start=1):
        moment = transition_time(tier, clock)
        if moment is not None and moment <= now:
            index = position
    return index


def tier_since(policy: ArchivePolicySpec, clock: AssetClock, index: int) -> datetime:
    """When the asset entered tier `index`: a placement that becomes due again later is a new one."""
    if index > 0:
        moment = transition_time(policy.tiers[index], clock)
        assert moment is not None
        return moment
    return max(m for m in (clock.ingested_at, clock.last_used_at, clock.restored_at) if m is not None)


def next_transition(policy: ArchivePolicySpec, clock: AssetClock, now: datetime) -> datetime | None:
    """When the tier will next change, for a timer aimed at it."""
    moments = [m for t in policy.tiers[1:] if (m := transition_time(t, clock)) is not None and m > now]
    return min(moments, default=None)


@dataclass(frozen=True)
class Target:
    location: Location
    storage_class: str
    primary: bool


def _class_at(policy: ArchivePolicySpec, location: str, tier_index: int) -> str:
    """A replica takes the class of the furthest reached tier that keeps content at its location."""
    classes = [t.storage_class for t in policy.tiers[: tier_index + 1] if t.location == location]
    return classes[-1] if classes else DEFAULT_STORAGE_CLASS


def placement(policy: ArchivePolicySpec, tier_index: int) -> list[Target]:
    """The tier's location first (the primary copy), then replicas up to minCopies.

    Replicas are picked one at a time: an offsite location while none is chosen and the policy
    requires one; then a site not used yet; then a location no earlier tier moved content out
    of (so a move vacates it); then the policy's order.
    """
    tier = policy.tiers[tier_index]
    by_name = {loc.name: loc for loc in policy.locations}
    chosen = [by_name[tier.location]]
    copies = policy.copies.min_copies if policy.copies else 1
    require_offsite = bool(policy.copies and policy.copies.require_offsite)
    vacated = {t.location for t in policy.tiers[:tier_index]} - {tier.location}
    order = {loc.name: i for i, loc in enumerate(policy.locations)}
    while len(chosen) < copies:
        candidates = [loc for loc in policy.locations if loc not in chosen]
        if not candidates:
            break
        sites = {loc.site or loc.name for loc in chosen}
        need_offsite = require_offsite and not any(loc.offsite for loc in chosen)

        def rank(loc: Location, sites: set[str] = sites, need_offsite: bool = need_offsite) -> tuple[int, ...]:
            return (0 if loc.offsite or not need_offsite else 1, 0 if (loc.site or loc.name) not in sites else 1,
                    1 if loc.name in vacated else 0, order[loc.name])

        chosen.append(min(candidates, key=rank))
    return [Target(loc, tier.storage_class if i == 0 else _class_at(policy, loc.name, tier_index), i == 0)
            for i, loc in enumerate(chosen)]


def vacated_locations(policy: ArchivePolicySpec, targets: list[Target]) -> list[Location]:
    """Every policy location the set must not stay in: copies there are removed once targets verify."""
    kept = {t.location.name for t in targets}
    return [loc for loc in policy.locations if loc.name not in kept]
