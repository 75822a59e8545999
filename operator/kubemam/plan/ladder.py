"""TranscodeLadder checks the schema cannot make, as conditions."""

from __future__ import annotations

from datetime import datetime

from kubemam.api.ladder import TranscodeLadderSpec, TranscodeLadderStatus
from kubemam.plan.conditions import apply_verdicts, ready_verdict


def ladder_problems(spec: TranscodeLadderSpec) -> list[tuple[str, str]]:
    """(reason, message) for every problem found."""
    problems: list[tuple[str, str]] = []
    if spec.chunking and spec.chunking.chunk_seconds % spec.segment_duration_seconds:
        problems.append(("ChunkNotSegmentAligned",
                         f"chunking.chunkSeconds {spec.chunking.chunk_seconds} is not a multiple of "
                         f"segmentDurationSeconds {spec.segment_duration_seconds}, so chunk seams would "
                         "split a GOP"))
    seen: dict[tuple[str, int, int], str] = {}
    for rung in spec.renditions:
        key = (rung.codec, rung.width, rung.height)
        rate = rung.rate_control
        same = seen.get(key)
        if same and rate.mode == "crf":
            problems.append(("DuplicateRung", f"renditions {same!r} and {rung.name!r} are both "
                                              f"{rung.codec} {rung.width}x{rung.height} at constant quality"))
        seen[key] = rung.name
    return problems


def plan_ladder(spec: TranscodeLadderSpec, status: TranscodeLadderStatus, generation: int,
                now: datetime) -> TranscodeLadderStatus:
    problems = ladder_problems(spec)
    verdict = ready_verdict(problems, f"{len(spec.renditions)} renditions")
    return status.model_copy(update={
        "phase": "Invalid" if problems else "Valid",
        "observed_generation": generation,
        "conditions": apply_verdicts(status.conditions, [verdict], generation, now),
        "rendition_count": len(spec.renditions),
    })
