"""The operator's Prometheus metrics (served on KUBEMAM_METRICS_PORT, default 8080; 0 turns it off).

Labels stay bounded: namespace, channel and outcome — never an asset or window name.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

DISTRIBUTION_ACTIONS = Counter("kubemam_distribution_actions_total", "Verified publishes and takedowns",
                               ["namespace", "channel", "action"])
TAKEDOWN_LATENCY = Histogram("kubemam_takedown_latency_seconds",
                             "From the end of a window's licence to the verified removal from the origin",
                             ["channel"], buckets=(1, 2, 3, 5, 10, 30, 60, 300, 3600))
# Alert on this: publishes/takedowns that keep failing (a takedown that cannot be verified).
DISTRIBUTION_FAILED_ATTEMPTS = Gauge("kubemam_distribution_failed_attempts",
                                     "Consecutive failed distribute Jobs for a namespace's pending actions",
                                     ["namespace"])


def serve() -> None:
    port = int(os.environ.get("KUBEMAM_METRICS_PORT") or 8080)
    if port == 0:
        return
    try:
        start_http_server(port)
    except OSError as err:  # another operator on this machine (a test next to the demo) has the port
        log.warning("metrics not served on :%d: %s", port, err)

# Archive (issue 7): set by controllers/archive.py.
ARCHIVE_UNDER_REPLICATED = Gauge("kubemam_archive_under_replicated_assets",
                                 "Archived assets with fewer verified copies than their policy's minCopies",
                                 ["namespace"])
ARCHIVE_COPIES_MISSING = Gauge("kubemam_archive_copies_missing",
                               "Verified copies still missing to reach every archived asset's minCopies",
                               ["namespace"])
FIXITY_FAILURES = Counter("kubemam_fixity_failures_total",
                          "Copies found missing or changed by a fixity check (each is repaired from a good copy)",
                          ["namespace", "location"])
FIXITY_CHECKED_BYTES = Counter("kubemam_fixity_checked_bytes_total", "Bytes re-hashed by fixity checks",
                               ["namespace"])
TIERED_BYTES = Counter("kubemam_tiered_bytes_total", "Bytes copied into a tier or location by archive Jobs",
                       ["namespace", "tier"])
