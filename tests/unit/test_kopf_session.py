"""Kopf's HTTP session (controllers/session.py): the credentials Kopf found, a bounded connection pool."""

from __future__ import annotations

import asyncio

import kopf

from kubemam.controllers.session import CONNECTIONS, bounded_session


def test_kopfs_session_keeps_its_credentials_and_bounds_its_connections() -> None:
    async def build() -> tuple[int, str | None, str, str | None]:
        info = kopf.ConnectionInfo(server="https://127.0.0.1:6443", token="t0ken", insecure=True,
                                   default_namespace="media")
        made = bounded_session(info)
        try:
            connector = made.aiohttp_session.connector
            assert connector is not None
            return (connector.limit, made.aiohttp_session.headers.get("Authorization"), made.server,
                    made.default_namespace)
        finally:
            await made.aiohttp_session.close()

    assert asyncio.run(build()) == (CONNECTIONS, "Bearer t0ken", "https://127.0.0.1:6443", "media")


def test_the_bound_leaves_room_for_every_namespaces_watch_streams() -> None:
    from kubemam.controllers.session import STREAMS_PER_SCOPE, connection_limit

    # 40 namespaces × 5 watched resources = 200 streams that never give their connection back.
    assert connection_limit(40) - 5 * 40 >= CONNECTIONS
    assert connection_limit(1) == connection_limit(0) == CONNECTIONS + STREAMS_PER_SCOPE
