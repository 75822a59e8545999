"""Rights enforcement, pure: availability per asset × target from windows and the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubemam.api.asset import DistributionStatus
from kubemam.api.distribution import DistributionTarget, parse_targets
from kubemam.api.rights import RightsWindowSpec
from kubemam.plan.availability import Asset, Window, feeds_for, plan_rights, recorded_targets

T0 = datetime(2027, 1, 1, tzinfo=UTC)
NORDICS = DistributionTarget(name="svod-nordics", channel="svod", origin="s3://origin/svod-nordics",
                             territories=["NO", "SE", "DK"])
NORWAY = DistributionTarget(name="svod-no", channel="svod", origin="s3://origin/svod-no", territories=["NO"])
AVOD_UK = DistributionTarget(name="avod-uk", channel="avod", origin="s3://origin/avod-uk", territories=["GB"])
TARGETS = [NORDICS, NORWAY, AVOD_UK]


def _window(name: str, start: int, end: int, territories: list[str], channels: list[str] | None = None,
            exclusive: bool = False, **assets: Any) -> Window:
    return Window(name, RightsWindowSpec.model_validate({
        "assets": assets or {"selector": {"matchLabels": {"series": "coastal"}}}, "territories": territories,
        "channels": channels or ["svod"], "start": T0 + timedelta(seconds=start),
        "end": T0 + timedelta(seconds=end), "exclusive": exclusive}))


def _asset(name: str = "ep1", published: list[str] | None = None) -> Asset:
    records = [DistributionStatus(target=t, window="w", channel="svod", territories=["NO"], state="Published",
                                  origin=f"s3://origin/{t}/media/{name}") for t in published or []]
    return Asset(name, {"series": "coastal"}, f"s3://lib/assets/media/{name}/packages/abc", records)


def test_an_open_window_publishes_only_where_every_territory_is_licensed() -> None:
    windows = [_window("nordic-svod", 0, 100, ["NO", "SE", "DK", "FI"])]
    plan = plan_rights("media", windows, [_asset()], TARGETS, T0 + timedelta(seconds=10))
    assert plan.open == {("ep1", "svod-nordics"): "nordic-svod", ("ep1", "svod-no"): "nordic-svod"}
    assert [(a.action, a.target.name, a.origin) for a in plan.actions] == [
        ("publish", "svod-nordics", "s3://origin/svod-nordics/media/ep1"),
        ("publish", "svod-no", "s3://origin/svod-no/media/ep1")]
    assert plan.next_transition == T0 + timedelta(seconds=100)
    # Feeds are per namespace (two namespaces may share an origin bucket) and carry only the pairs asked
    # for (those on the origin or being published now).
    feeds = feeds_for("media", plan, windows, {("ep1", "svod-nordics")})
    assert set(feeds) == {"s3://origin/feeds/media/svod.json", "s3://origin/feeds/media/avod.json"}
    entry, = feeds["s3://origin/feeds/media/svod.json"]
    assert entry == {"asset": "ep1", "target": "svod-nordics", "channel": "svod", "territories": ["DK", "NO", "SE"],
                     "window": "nordic-svod", "start": "2027-01-01T00:00:00Z", "end": "2027-01-01T00:01:40Z"}
    # Sweden missing from the licence: the Nordic origin gets nothing, Norway's still does.
    partial = plan_rights("media", [_window("no-only", 0, 100, ["NO", "DK"])], [_asset()], TARGETS,
                          T0 + timedelta(seconds=10))
    assert set(partial.open) == {("ep1", "svod-no")}


def test_closing_takes_down_what_was_published_and_waits_for_a_package() -> None:
    windows = [_window("nordic-svod", 0, 100, ["NO", "SE", "DK"])]
    after = plan_rights("media", windows, [_asset(published=["svod-nordics", "svod-no"])], TARGETS,
                        T0 + timedelta(seconds=100))
    assert [(a.action, a.target.name) for a in after.actions] == [("takedown", "svod-nordics"),
                                                                  ("takedown", "svod-no")]
    assert after.next_transition is None
    assert feeds_for("media", after, windows, {("ep1", "svod-nordics")})["s3://origin/feeds/media/svod.json"] == []
    before = plan_rights("media", windows, [_asset()], TARGETS, T0 - timedelta(seconds=1))
    assert before.actions == [] and before.next_transition == T0
    unpackaged = Asset("ep2", {"series": "coastal"}, None)
    assert plan_rights("media", windows, [unpackaged], TARGETS, T0).actions == []
    # Published and still open: nothing to do.
    assert plan_rights("media", windows, [_asset(published=["svod-nordics", "svod-no"])], TARGETS,
                       T0 + timedelta(seconds=5)).actions == []


def test_exclusive_overlap_is_a_conflict_and_the_overlap_is_not_published() -> None:
    first = _window("a-exclusive", 0, 100, ["NO"], exclusive=True)
    second = _window("b-other", 50, 150, ["NO", "SE"])
    plan = plan_rights("media", [first, second], [_asset()], TARGETS, T0 + timedelta(seconds=60))
    assert set(plan.conflicts) == {"a-exclusive", "b-other"} and "ep1" in plan.conflicts["a-exclusive"][0]
    assert ("ep1", "svod-no") not in plan.open  # both cover Norway at 60 s: the overlap
    early = plan_rights("media", [first, second], [_asset()], TARGETS, T0 + timedelta(seconds=10))
    assert early.open == {("ep1", "svod-no"): "a-exclusive"}  # before the overlap the licence holds
    late = plan_rights("media", [first, second], [_asset()], TARGETS, T0 + timedelta(seconds=120))
    assert late.open == {("ep1", "svod-no"): "b-other"}
    # Different channels, or no exclusive window: no conflict.
    avod = _window("c-avod", 50, 150, ["NO"], channels=["avod"])
    assert plan_rights("media", [first, avod], [_asset()], TARGETS, T0).conflicts == {}


def test_a_window_names_assets_and_counts_what_it_selects() -> None:
    named = _window("named", 0, 100, ["NO"], names=["ep2"])
    plan = plan_rights("media", [named], [_asset("ep1"), _asset("ep2")], TARGETS, T0)
    assert plan.matched == {"named": 1} and set(plan.open) == {("ep2", "svod-no")}


def test_targets_parse_and_refuse_bad_ones() -> None:
    targets = parse_targets([{"name": "svod-no", "channel": "svod", "origin": "s3://origin/no",
                              "territories": ["NO"], "purgeWebhook": "http://cdn.local/purge"}])
    assert targets[0].purge_webhook == "http://cdn.local/purge"
    for bad, words in (([{"name": "x", "channel": "svod", "origin": "s3://origin/x", "territories": ["XX"]}], "XX"),
                       ([{"name": "x", "channel": "svod", "origin": "s3://origin/x", "territories": ["NO"]}] * 2,
                        "duplicate")):
        try:
            parse_targets(bad)
        except ValueError as err:
            assert words in str(err)
        else:
            raise AssertionError(f"{bad} was accepted")


def test_the_example_targets_parse() -> None:
    import yaml

    from tests.helpers import EXAMPLES

    doc = yaml.safe_load((EXAMPLES / "distribution-targets.yaml").read_text())
    targets = parse_targets(yaml.safe_load(doc["data"]["targets.yaml"]))
    assert [t.name for t in targets] == ["svod-nordics", "svod-norway", "avod-uk"]


def test_a_failed_publish_is_published_again_while_open_and_taken_down_once_closed() -> None:
    window = _window("nordic-svod", 0, 100, ["NO", "SE", "DK"])
    failed = Asset("ep1", {"series": "coastal"}, "s3://lib/assets/media/ep1/packages/abc", [DistributionStatus(
        target="svod-no", window="nordic-svod", channel="svod", territories=["NO"], state="Failed",
        origin="s3://origin/svod-no/media/ep1")])
    during = plan_rights("media", [window], [failed], [NORWAY], T0 + timedelta(seconds=5))
    assert [(a.action, a.target.name) for a in during.actions] == [("publish", "svod-no")]
    after = plan_rights("media", [window], [failed], [NORWAY], T0 + timedelta(seconds=100))
    assert [(a.action, a.target.name) for a in after.actions] == [("takedown", "svod-no")]


def test_a_clash_outside_the_targets_territories_does_not_block_it() -> None:
    # A and B clash only on Denmark; Norway's origin is served by A alone.
    first = _window("a-exclusive", 0, 100, ["NO", "DK"], exclusive=True)
    second = _window("b-other", 0, 100, ["SE", "DK"])
    plan = plan_rights("media", [first, second], [_asset()], [NORWAY], T0 + timedelta(seconds=5))
    assert plan.open == {("ep1", "svod-no"): "a-exclusive"} and set(plan.conflicts) == {"a-exclusive", "b-other"}


def test_a_window_time_without_a_zone_is_refused() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        RightsWindowSpec.model_validate({"assets": {"names": ["ep1"]}, "territories": ["NO"], "channels": ["svod"],
                                         "start": "2027-01-01T00:00:00", "end": "2027-02-01T00:00:00Z"})


def test_a_target_removed_from_the_configmap_is_taken_down_where_it_was_published() -> None:
    window = _window("nordic-svod", 0, 100, ["NO", "SE", "DK"])
    published = Asset("ep1", {"series": "coastal"}, "s3://lib/assets/media/ep1/packages/abc", [DistributionStatus(
        target="svod-old", window="nordic-svod", channel="svod", territories=["NO"], state="Published",
        origin="s3://old-origin/svod/media/ep1")])
    plan = plan_rights("media", [window], [published], [NORWAY], T0 + timedelta(seconds=5))
    takedowns = [a.to_input() for a in plan.actions if a.action == "takedown"]
    assert [(a.target, a.origin, a.package, a.channel, a.territories) for a in takedowns] == [
        ("svod-old", "s3://old-origin/svod/media/ep1", None, "svod", ["NO"])]


def test_overlapping_origins_are_refused_naming_both_targets() -> None:
    def target(name: str, origin: str) -> dict[str, Any]:
        return {"name": name, "channel": "svod", "origin": origin, "territories": ["NO"]}

    for first, second in (("s3://origin/svod", "s3://origin/svod/"), ("s3://origin/svod", "s3://origin/svod/kids"),
                          ("s3://origin", "s3://origin/anything")):
        try:
            parse_targets([target("a", first), target("b", second), target("c", "s3://other/c")])
        except ValueError as err:
            assert f"a ({first}) and b ({second})" in str(err) and "c (" not in str(err)
        else:
            raise AssertionError(f"{first} and {second} were accepted")
    # Prefixes that only share letters do not overlap: svod is not inside svod-kids.
    assert len(parse_targets([target("a", "s3://origin/svod"), target("b", "s3://origin/svod-kids"),
                              target("c", "s3://origin2/svod")])) == 3


def test_an_asset_being_deleted_is_taken_down_and_never_published() -> None:
    windows = [_window("nordic-svod", 0, 100, ["NO", "SE", "DK"])]
    deleting = Asset("ep1", {"series": "coastal"}, "s3://lib/assets/media/ep1/packages/abc", _asset(
        published=["svod-no"]).distribution, deleting=True)
    plan = plan_rights("media", windows, [deleting], TARGETS, T0 + timedelta(seconds=10))
    assert plan.open == {}
    assert [(a.action, a.target.name) for a in plan.actions] == [("takedown", "svod-no")]  # not svod-nordics


def test_without_readable_targets_the_records_stand_in_for_takedowns_only() -> None:
    windows = [_window("nordic-svod", 0, 100, ["NO", "SE", "DK"])]
    published = _asset("ep1", published=["svod-no"])
    fresh = _asset("ep2")
    stand_ins = recorded_targets([published, fresh])
    assert [(t.name, t.origin, t.territories, t.purge_webhook) for t in stand_ins] == [
        ("svod-no", "s3://origin/svod-no", ["NO"], None)]
    # Still licensed: nothing; closed: taken down from the origin in the record; ep2 is never published.
    assert plan_rights("media", windows, [published, fresh], stand_ins, T0 + timedelta(seconds=5),
                       publish=False).actions == []
    after = plan_rights("media", windows, [published, fresh], stand_ins, T0 + timedelta(seconds=100), publish=False)
    assert [(a.action, a.asset, a.origin) for a in after.actions] == [
        ("takedown", "ep1", "s3://origin/svod-no/media/ep1")]
