"""Rights enforcement, pure: from every RightsWindow, asset and distribution target of a namespace
and the clock, what must be available where now, what must be published or taken down, the
availability feeds, and the next instant any of that changes.

An asset is available on a target while a window that selects it is open, names the target's
channel and covers every territory the target serves (a target whose territories are not all
licensed gets nothing). Two windows that overlap in time, channel and territory on the same asset,
at least one of them exclusive, are in conflict: both are reported, and while the overlap lasts
neither publishes on the targets it touches.

An asset being deleted is licensed nowhere: what it has published is taken down and nothing is
published, to new targets or old. Without readable targets (an invalid ConfigMap) the planner still
takes down: `recorded_targets` stands in for the targets from what the assets' status says they
are published on, and `plan_rights(publish=False)` plans takedowns only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubemam.api.asset import DistributionStatus
from kubemam.api.distribution import DistributionTarget
from kubemam.api.rights import AssetSelection, RightsWindowSpec
from kubemam.plan.selectors import selector_matches
from kubemam.steps.distribute import ActionKind, DistributeAction


@dataclass(frozen=True)
class Window:
    name: str
    spec: RightsWindowSpec


@dataclass(frozen=True)
class Asset:
    name: str
    labels: dict[str, str]
    package: str | None  # the package prefix, once packaged
    distribution: list[DistributionStatus] = field(default_factory=list)
    deleting: bool = False  # licensed nowhere: taken down, never published
    publishable: bool = True  # False: held by the QC gate (plan/qcgate.py): nothing new is published

    def record(self, target: str) -> DistributionStatus | None:
        return next((d for d in self.distribution if d.target == target), None)

    def published_on(self, target: str) -> DistributionStatus | None:
        return next((d for d in self.distribution if d.target == target and d.state == "Published"), None)

    def maybe_on(self, target: str) -> DistributionStatus | None:
        """Published, or a publish under way (Pending) or whose Job failed: some of it may be on the origin."""
        return next((d for d in self.distribution
                     if d.target == target and d.state in ("Published", "Pending", "Failed")), None)


@dataclass(frozen=True)
class Action:
    action: ActionKind
    asset: str
    target: DistributionTarget
    window: str
    package: str | None
    origin: str

    def to_input(self) -> DistributeAction:
        """The action as the distribute step's input carries it."""
        return DistributeAction(action=self.action, asset=self.asset, target=self.target.name,
                                channel=self.target.channel, territories=sorted(self.target.territories),
                                window=self.window, package=self.package, origin=self.origin,
                                purge_webhook=self.target.purge_webhook)


@dataclass
class RightsPlan:
    open: dict[tuple[str, str], str]  # (asset, target) → the window that licenses it now
    conflicts: dict[str, list[str]]  # window → what it conflicts with
    matched: dict[str, int]  # window → assets it selects
    actions: list[Action]
    next_transition: datetime | None
    targets: list[DistributionTarget] = field(default_factory=list)  # what was planned for (stand-ins too)


def origin_for(target: DistributionTarget, namespace: str, asset: str) -> str:
    return f"{target.origin.rstrip('/')}/{namespace}/{asset}"


def feed_uri(target: DistributionTarget, namespace: str) -> str:
    """One feed per (origin bucket, namespace, channel): namespaces sharing an origin bucket each have
    their own, so neither overwrites the other's."""
    bucket = target.origin.removeprefix("s3://").split("/", 1)[0]
    return f"s3://{bucket}/feeds/{namespace}/{target.channel}.json"


def stand_in(record: DistributionStatus) -> DistributionTarget | None:
    """The target a record was published to, rebuilt from the record (its origin is
    <target origin>/<namespace>/<asset>): for taking down from a target the ConfigMap no longer names,
    or cannot be read. It has no purge webhook: the ConfigMap alone knows it."""
    if not record.origin:
        return None
    return DistributionTarget.model_construct(name=record.target, channel=record.channel,  # type: ignore[arg-type]
                                              origin=record.origin.rsplit("/", 2)[0],
                                              territories=list(record.territories), purge_webhook=None)


def recorded_targets(assets: list[Asset]) -> list[DistributionTarget]:
    """Stand-ins for the targets any asset may be on (Published, or a publish that failed), by name."""
    found: dict[str, DistributionTarget] = {}
    for asset in assets:
        for record in asset.distribution:
            if record.state in ("Published", "Pending", "Failed") and record.target not in found:
                target = stand_in(record)
                if target is not None:
                    found[record.target] = target
    return list(found.values())


def feeds_for(namespace: str, plan: RightsPlan, windows: list[Window],
              pairs: set[tuple[str, str]]) -> dict[str, list[dict[str, Any]]]:
    """Every target's feed, whole: the licensed (asset, target) pairs among `pairs` (those on the origin
    or being published now; a publish that is held back is not advertised)."""
    by_name = {t.name: t for t in plan.targets}
    specs = {w.name: w.spec for w in windows}
    feeds: dict[str, list[dict[str, Any]]] = {feed_uri(t, namespace): [] for t in plan.targets}
    for (asset_name, target_name), window_name in sorted(plan.open.items()):
        if (asset_name, target_name) not in pairs:
            continue
        target, spec = by_name[target_name], specs[window_name]
        feeds[feed_uri(target, namespace)].append({
            "asset": asset_name, "target": target_name, "channel": target.channel,
            "territories": sorted(target.territories), "window": window_name,
            "start": spec.start.isoformat().replace("+00:00", "Z"), "end": spec.end.isoformat().replace("+00:00", "Z")})
    return feeds


def _covers(window: RightsWindowSpec, target: DistributionTarget) -> bool:
    return target.channel in window.channels and set(target.territories) <= set(window.territories)


def _active(window: RightsWindowSpec, now: datetime) -> bool:
    return window.start <= now < window.end


def _clash(a: RightsWindowSpec, b: RightsWindowSpec, within: set[str] | None = None) -> bool:
    """Overlapping in time, channel and territory (within the given ones), with at least one exclusive."""
    shared = set(a.territories) & set(b.territories) & (within if within is not None else set(a.territories))
    return ((a.exclusive or b.exclusive) and a.start < b.end and b.start < a.end
            and bool(set(a.channels) & set(b.channels)) and bool(shared))


def _selection(selection: AssetSelection, assets: list[Asset], names: set[str]) -> set[str]:
    """The assets a window covers (plan/selectors.py `selected`, by set rather than asset by asset)."""
    chosen = set(selection.names or []) & names
    if selection.selector is not None:
        chosen |= {a.name for a in assets if selector_matches(selection.selector, a.labels)}
    return chosen


def plan_rights(namespace: str, windows: list[Window], assets: list[Asset], targets: list[DistributionTarget],
                now: datetime, publish: bool = True) -> RightsPlan:
    """`publish=False`: takedowns only (the targets are stand-ins, not the ConfigMap's)."""
    names = {a.name for a in assets}
    selects = {w.name: _selection(w.spec.assets, assets, names) for w in windows}
    conflicts: dict[str, list[str]] = {w.name: [] for w in windows}
    for i, a in enumerate(windows):
        for b in windows[i + 1:]:
            shared = selects[a.name] & selects[b.name]
            if shared and _clash(a.spec, b.spec):
                conflicts[a.name].append(f"{b.name} on {', '.join(sorted(shared))}")
                conflicts[b.name].append(f"{a.name} on {', '.join(sorted(shared))}")

    open_now: dict[tuple[str, str], str] = {}
    for asset in assets:
        licensed = [] if asset.deleting else [w for w in windows
                                              if asset.name in selects[w.name] and _active(w.spec, now)]
        for target in targets:
            covering = [w for w in licensed if _covers(w.spec, target)]
            if not covering:
                continue
            # A clash live now on this target's channel and territories blocks it, whoever covers.
            touching = [w for w in licensed if target.channel in w.spec.channels
                        and set(target.territories) & set(w.spec.territories)]
            served = set(target.territories)
            if any(_clash(a.spec, b.spec, served) for a in touching for b in touching if a.name < b.name):
                continue
            open_now[(asset.name, target.name)] = min(w.name for w in covering)

    by_name = {t.name: t for t in targets}
    actions: list[Action] = []
    for asset in assets:
        for target in targets:
            window = open_now.get((asset.name, target.name))
            published = asset.published_on(target.name)
            origin = origin_for(target, namespace, asset.name)
            if window and not published and asset.package and publish and asset.publishable:
                actions.append(Action("publish", asset.name, target, window, asset.package, origin))
            elif not window and (published := asset.maybe_on(target.name)):
                actions.append(Action("takedown", asset.name, target, published.window, None,
                                      published.origin or origin))
        for record in asset.distribution:  # a target removed from the ConfigMap is taken down too
            if record.state in ("Published", "Pending", "Failed") and record.target not in by_name:
                # Stand in for the removed target: the record carries the origin it published to.
                gone = stand_in(record)
                if gone is not None and record.origin:
                    actions.append(Action("takedown", asset.name, gone, record.window, None, record.origin))

    instants = [t for w in windows if selects[w.name] for t in (w.spec.start, w.spec.end) if t > now]
    return RightsPlan(open_now, {k: v for k, v in conflicts.items() if v}, {k: len(v) for k, v in selects.items()},
                      actions, min(instants, default=None), list(targets))
