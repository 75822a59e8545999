from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kubemam.plan.conditions import Verdict, apply_verdicts, set_condition, status_patch

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_last_transition_time_moves_only_on_a_flip() -> None:
    first = set_condition([], Verdict("Ready", "False", "Waiting", "a"), 1, T0)
    same_status = set_condition(first, Verdict("Ready", "False", "StillWaiting", "b"), 2, T1)
    assert same_status[0].last_transition_time == T0
    assert (same_status[0].reason, same_status[0].message, same_status[0].observed_generation) == (
        "StillWaiting", "b", 2)
    flipped = set_condition(same_status, Verdict("Ready", "True", "Done"), 2, T1)
    assert flipped[0].last_transition_time == T1


def test_other_conditions_are_kept_in_order() -> None:
    conditions = apply_verdicts(None, [Verdict("Ingested", "True", "Ok"), Verdict("Ready", "True", "Ok")], 1, T0)
    updated = set_condition(conditions, Verdict("Ingested", "False", "Failed"), 1, T1)
    assert [c.type for c in updated] == ["Ingested", "Ready"]
    assert updated[1] == conditions[1]


def test_status_patch_is_none_when_nothing_changed_and_nulls_removed_keys() -> None:
    current = {"phase": "Ready", "progress": {"percent": 100}}
    assert status_patch(current, dict(current)) is None
    assert status_patch(current, {"phase": "Failed"}) == {"phase": "Failed", "progress": None}
    assert status_patch(None, {"phase": "Pending"}) == {"phase": "Pending"}


def test_status_patch_nulls_a_key_gone_from_a_nested_object() -> None:
    current = {"phase": "Transcoding", "progress": {"step": "transcode", "percent": 94, "fps": 13.0}}
    desired = {"phase": "Packaging", "progress": {"step": "package", "percent": 0}}
    patch = status_patch(current, desired)
    assert patch == {"phase": "Packaging", "progress": {"step": "package", "percent": 0, "fps": None}}
