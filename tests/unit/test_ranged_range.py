"""The Range header as the chunk pods' loopback server reads it (storage/ranged.py)."""

from __future__ import annotations

import pytest

from kubemam.storage.ranged import parse_range


@pytest.mark.parametrize(("header", "expected"), [
    (None, (0, 999)), ("bytes=0-", (0, 999)), ("bytes=100-199", (100, 199)), ("bytes=900-5000", (900, 999)),
    ("bytes=-100", (900, 999)), ("bytes=-5000", (0, 999)), ("bytes=1000-", None), ("bytes=5-4", None),
    ("bytes=-0", None), ("bytes=0-1,5-6", None), ("items=0-1", None),
])
def test_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == expected


def test_an_empty_object_has_no_range() -> None:
    assert parse_range(None, 0) is None
