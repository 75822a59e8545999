"""The multipart part planner: within S3's limits for every size up to 5 TiB."""

from __future__ import annotations

import pytest

from kubemam.storage.parts import (
    MAX_OBJECT,
    MAX_PART,
    MAX_PARTS,
    MIN_PART,
    PREFERRED_PART,
    GiB,
    MiB,
    ObjectTooLarge,
    TiB,
    plan_parts,
)


def _check(size: int) -> None:
    plan = plan_parts(size)
    ranges = plan.ranges()
    assert len(ranges) == plan.count <= MAX_PARTS
    assert plan.part_size % MiB == 0 and MIN_PART <= plan.part_size <= MAX_PART
    assert all(last - first + 1 == plan.part_size for first, last in ranges[:-1])
    assert 0 < ranges[-1][1] - ranges[-1][0] + 1 <= plan.part_size or size == 0
    # the ranges tile the object exactly: contiguous, from byte 0 to its last byte
    assert ranges[0][0] == 0 and ranges[-1][1] == size - 1
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:], strict=False))


@pytest.mark.parametrize("size", [0, 1, MIN_PART - 1, MIN_PART, PREFERRED_PART, PREFERRED_PART + 1, 5 * GiB,
                                  5 * GiB + 1, 626 * GiB, 640_000 * MiB, 640_000 * MiB + 1, TiB, 5 * TiB - 1,
                                  MAX_OBJECT])
def test_every_size_fits_the_limits(size: int) -> None:
    _check(size)


def test_one_tebibyte_was_16384_parts_of_64_mib_and_is_now_under_10000() -> None:
    assert TiB // (64 * MiB) == 16_384
    plan = plan_parts(TiB)
    assert plan.part_size == 105 * MiB and plan.count == 9_987


def test_five_tebibytes_use_525_mib_parts() -> None:
    plan = plan_parts(5 * TiB)
    assert plan.part_size == 525 * MiB and plan.count == 9_987


def test_small_objects_keep_the_preferred_part() -> None:
    assert plan_parts(10 * GiB).part_size == PREFERRED_PART
    assert plan_parts(625 * GiB).part_size == PREFERRED_PART  # exactly 10,000 parts of 64 MiB
    assert plan_parts(625 * GiB + 1).part_size == 65 * MiB
    assert plan_parts(GiB, preferred=8 * MiB).part_size == 8 * MiB
    assert plan_parts(GiB, preferred=1).part_size == MIN_PART  # never under S3's 5 MiB


def test_an_object_over_five_tebibytes_is_refused_by_name() -> None:
    with pytest.raises(ObjectTooLarge, match="5 TiB"):
        plan_parts(MAX_OBJECT + 1)
    with pytest.raises(ValueError, match="negative"):
        plan_parts(-1)
