"""Multipart part sizes from the object's size: pure, so every multipart path cuts objects the same way.

S3's limits: at most 10,000 parts, each 5 MiB to 5 GiB (the last may be smaller), objects up to 5 TiB.
A fixed part size cannot serve both a proxy and a terabyte master (64 MiB parts put 1 TiB at 16,384
parts), so the part grows with the object, in whole MiB, from a preferred size that keeps small objects
in few parts and bounds how much one part holds in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB
MIN_PART = 5 * MiB
MAX_PART = 5 * GiB
MAX_PARTS = 10_000
MAX_OBJECT = 5 * TiB
SINGLE_COPY_LIMIT = 5 * GiB  # the most one CopyObject or PutObject writes
PREFERRED_PART = 64 * MiB


class ObjectTooLarge(ValueError):
    """More than S3 holds in one object (5 TiB)."""


@dataclass(frozen=True)
class PartPlan:
    size: int
    part_size: int

    @property
    def count(self) -> int:
        return max(1, -(-self.size // self.part_size))

    def ranges(self) -> list[tuple[int, int]]:
        """(first, last) byte of every part, inclusive as HTTP ranges are; one empty part for an empty object."""
        if self.size == 0:
            return [(0, -1)]
        return [(start, min(start + self.part_size, self.size) - 1) for start in range(0, self.size, self.part_size)]


def plan_parts(size: int, preferred: int = PREFERRED_PART) -> PartPlan:
    """The part size for an object of size bytes: preferred, grown (in whole MiB) until ≤ 10,000 parts."""
    if size < 0:
        raise ValueError(f"object size {size} is negative")
    if size > MAX_OBJECT:
        raise ObjectTooLarge(f"{size} bytes is over S3's 5 TiB object limit")
    needed = -(-size // MAX_PARTS)  # the smallest part that fits in MAX_PARTS
    part = max(preferred, MIN_PART, -(-needed // MiB) * MiB)
    return PartPlan(size=size, part_size=min(part, MAX_PART))
