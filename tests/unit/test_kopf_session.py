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


def test_a_request_waiting_for_a_pooled_connection_is_not_timed_out_by_the_wait() -> None:
    """One connection, four requests the server answers in 0.4 s each, a 1 s timeout: the last waits 1.2 s for
    the connection and still succeeds; a server that never answers still times out."""
    import time

    import aiohttp
    from aiohttp import web

    from kubemam.controllers.session import QueuePatientSession

    async def scenario() -> tuple[list[int], float, bool]:
        async def slow(request: web.Request) -> web.Response:
            await asyncio.sleep(0.4)
            return web.Response(text="ok")

        async def never(request: web.Request) -> web.Response:
            await asyncio.sleep(3)
            return web.Response(text="late")

        app = web.Application()
        app.router.add_get("/slow", slow)
        app.router.add_get("/never", never)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        timeout = aiohttp.ClientTimeout(total=1.0, sock_connect=1.0)  # as Kopf passes it
        try:
            async with QueuePatientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
                async def get(path: str) -> int:
                    async with session.request("GET", f"http://127.0.0.1:{port}{path}", timeout=timeout) as answer:
                        await answer.read()
                        return answer.status

                statuses = list(await asyncio.gather(*(get("/slow") for _ in range(4))))
                started = time.monotonic()
                try:
                    await get("/never")
                    timed_out = False
                except TimeoutError:
                    timed_out = True
                return statuses, time.monotonic() - started, timed_out
        finally:
            await runner.cleanup()

    statuses, waited, timed_out = asyncio.run(scenario())
    assert statuses == [200] * 4
    assert timed_out and 0.9 <= waited < 2.5
