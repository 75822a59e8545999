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
