from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import yaml

from kubemam.api.archive import ArchivePolicySpec
from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.api.rights import RightsWindowSpec
from kubemam.plan.archive import policy_problems
from kubemam.plan.ladder import ladder_problems
from kubemam.plan.rights import window_phase
from kubemam.plan.selectors import selected
from tests.helpers import EXAMPLES


def _spec(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / name).read_text())["spec"])


def test_examples_validate_against_the_models() -> None:
    assert ladder_problems(TranscodeLadderSpec.model_validate(_spec("transcodeladder.yaml"))) == []
    assert policy_problems(ArchivePolicySpec.model_validate(_spec("archivepolicy.yaml"))) == []


def test_chunks_must_align_with_segments() -> None:
    spec = _spec("transcodeladder.yaml")
    spec["chunking"]["chunkSeconds"] = 30  # not a multiple of 4
    assert [r for r, _ in ladder_problems(TranscodeLadderSpec.model_validate(spec))] == ["ChunkNotSegmentAligned"]


def test_tier_loop_is_found() -> None:
    spec = _spec("archivepolicy.yaml")
    spec["tiers"].append({"name": "back", "location": "library", "storageClass": "STANDARD",
                          "transition": {"afterDays": 400}})
    assert "TierLoop" in [r for r, _ in policy_problems(ArchivePolicySpec.model_validate(spec))]


def test_window_phase_and_next_transition() -> None:
    spec = RightsWindowSpec.model_validate(_spec("rightswindow.yaml"))
    assert window_phase(spec, datetime(2026, 6, 1, tzinfo=UTC)) == ("Scheduled", spec.start)
    assert window_phase(spec, datetime(2027, 6, 1, tzinfo=UTC)) == ("Open", spec.end)
    assert window_phase(spec, spec.end) == ("Closed", None)


def test_selection_by_labels_and_names() -> None:
    spec = RightsWindowSpec.model_validate(_spec("rightswindow.yaml"))
    assert selected(spec.assets, "any", {"kubemam.io/series": "coastal"})
    assert not selected(spec.assets, "any", {"kubemam.io/series": "other"})


def test_unknown_territory_is_refused_by_the_model_too() -> None:
    spec = _spec("rightswindow.yaml")
    spec["territories"] = ["NO", "UK"]
    try:
        RightsWindowSpec.model_validate(spec)
    except ValueError as err:
        assert "UK" in str(err)
    else:
        raise AssertionError("UK is not an ISO 3166-1 code")
