"""Kopf's own HTTP session to the API server, with a bounded connection pool.

Kopf's built-in session opens as many connections as it has requests in flight (aiohttp's
`limit=0`). When a thousand MediaAssets arrive at once, each new object's finalizer patch is one
more TLS connection: bench/scale.py saw 1,150 open sockets and ~0.5 MiB of operator memory each
(TLS buffers), connect timeouts from a busy API server, and retries on top. A bounded pool keeps
the calls waiting in the operator, on a few kept-alive connections, instead. The credentials are
the ones Kopf's own login finds (kubeconfig or the pod's service account).
"""

from __future__ import annotations

import warnings
from typing import Any

import aiohttp
import kopf

# Kopf's watch streams each hold one connection for as long as they run; the rest carry its patches
# and posts, in parallel up to CONNECTIONS. Five resources are watched (the four kinds and Jobs) per
# scope — the whole cluster, or each namespace of `kubemam run --namespace` — plus Kopf's own scans:
# the bound grows with the scopes, or the streams alone would take every connection and stall it.
CONNECTIONS = 32
STREAMS_PER_SCOPE = 8
scopes = 1  # set by `kubemam run` before Kopf starts: the number of namespaces it serves, or 1


def connection_limit(scope_count: int) -> int:
    return CONNECTIONS + STREAMS_PER_SCOPE * max(1, scope_count)


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # aiohttp discourages subclassing; the override is public

    class QueuePatientSession(aiohttp.ClientSession):
        """Kopf gives each request a total timeout (`networking.request_timeout`), and aiohttp counts the wait for
        a free connection of the pool in it. Behind a burst (5,000 assets created at once) thousands of patches
        queued for the pool's connections timed out before they were sent (19,000 TimeoutErrors in 8 minutes),
        went to the back of the queue and timed out again. Here the wait for a connection is not held against a
        request: the same seconds bound connecting (sock_connect) and each wait for the server (sock_read)."""

        def request(self, method: str, url: Any, **kwargs: Any) -> Any:
            timeout = kwargs.get("timeout")
            if isinstance(timeout, aiohttp.ClientTimeout) and timeout.total is not None:
                kwargs["timeout"] = aiohttp.ClientTimeout(sock_connect=timeout.sock_connect or timeout.total,
                                                          sock_read=timeout.total)
            return super().request(method, url, **kwargs)


def bounded_session(info: kopf.ConnectionInfo, limit: int = CONNECTIONS) -> kopf.AiohttpSession:
    """The session Kopf would build for these credentials, with at most `limit` connections."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        session = QueuePatientSession(
            connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
            headers=info.as_http_headers(),
            proxy=info.proxy_url,
            trust_env=info.trust_env,
        )
    return kopf.AiohttpSession(server=info.server, default_namespace=info.default_namespace,
                               expiration=info.expiration, priority=info.priority, aiohttp_session=session)


async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    """Kopf's login through the Kubernetes client's configuration, then the bounded session."""
    info = kopf.login_via_client(**kwargs)
    return bounded_session(info, connection_limit(scopes)) if info is not None else None
