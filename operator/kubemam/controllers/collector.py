"""The pace of Python's cyclic garbage collector in the operator, and the time it takes.

The operator's heap grows with the catalogue: Kopf keeps state for every object it watches, the indexes an
entry per asset, Job and window. A full collection walks all of it, and Python's default pace (a young
collection every 700 new container objects, a full one after 100 of those once the old heap grew by a quarter)
ran 44 full collections, 41 s, while 10,000 assets were created at once, and 60 s in all: a fifth of the
operator's CPU in the burst. Young collections every 10,000 new objects: 3 full collections (5 s), 19 s in all,
the same peak RSS (bench/scale.py, docs/architecture.md). Memory left in cycles waits longer to be freed;
what the operator frees (bodies, answers, events) goes by reference counting as soon as it is dropped.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from kubemam import metrics

THRESHOLDS = (10_000, 10, 10)

_started: dict[int, float] = {}
# The counter's children, made once: the callback may run on a thread that holds the metric's own lock (a
# scrape copying its children allocates, and an allocation can start a collection); a child's increment takes
# only the child's lock, under which nothing is allocated that starts one.
_seconds = {generation: metrics.GC_SECONDS.labels(generation=str(generation)) for generation in range(3)}


def _timed(phase: str, info: dict[str, Any]) -> None:
    generation = int(info["generation"])
    if phase == "start":
        _started[generation] = time.thread_time()
    elif (began := _started.pop(generation, None)) is not None:
        _seconds[generation].inc(time.thread_time() - began)


def pace() -> None:
    """Set the operator's pace and count the collector's time (`kubemam_operator_gc_seconds`); once a process."""
    gc.set_threshold(*THRESHOLDS)
    if _timed not in gc.callbacks:
        gc.callbacks.append(_timed)
