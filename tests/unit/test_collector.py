"""The operator's garbage-collector pace is set and the collector's time reaches its metrics."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from kubemam.controllers import collector


@pytest.fixture
def paced() -> Iterator[None]:
    thresholds, callbacks = gc.get_threshold(), list(gc.callbacks)
    try:
        collector.pace()
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.callbacks[:] = callbacks


def _seconds(generation: int) -> float:
    return REGISTRY.get_sample_value("kubemam_operator_gc_seconds_total", {"generation": str(generation)}) or 0.0


@pytest.mark.usefixtures("paced")
def test_a_full_collection_is_timed_at_the_operators_pace() -> None:
    assert gc.get_threshold() == collector.THRESHOLDS
    collector.pace()  # twice: still one callback
    assert gc.callbacks.count(collector._timed) == 1
    before = _seconds(2)
    cycles = [[] for _ in range(50_000)]
    for cycle in cycles:
        cycle.append(cycle)  # garbage only the cyclic collector frees
    del cycles
    gc.collect()
    assert _seconds(2) > before
