"""Fault injection on loopback: a TCP proxy that can pass, blackhole, delay or reset connections, and an
HTTP mode that answers S3 requests with 503 SlowDown. One background thread with its own event loop per
proxy; tests flip the mode while traffic flows.

    with FaultProxy(upstream_port) as proxy:          # listens on 127.0.0.1:proxy.port
        proxy.set(Mode.BLACKHOLE)                     # accepted, never answered: a hung call
        proxy.set(Mode.PASS)

Modes act on new *and* open connections: a blackhole stops forwarding bytes on every connection (so a
watch that is already open hangs too), RESET closes them all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import socket
import ssl
import threading
from types import TracebackType


class Mode(enum.Enum):
    PASS = "pass"
    BLACKHOLE = "blackhole"  # accept, read, forward nothing, answer nothing
    DELAY = "delay"  # forward after `delay` seconds per chunk
    RESET = "reset"  # close every connection at once, refuse new ones with a reset
    S3_UNAVAILABLE = "s3-unavailable"  # answer every HTTP request with 503 SlowDown (S3's own throttle reply)


_SLOW_DOWN_BODY = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>"
                   b"<Message>Please reduce your request rate.</Message></Error>")
SLOW_DOWN = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
             b"Content-Length: " + str(len(_SLOW_DOWN_BODY)).encode() + b"\r\n\r\n" + _SLOW_DOWN_BODY)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", port: int | None = None,
                 delay: float = 2.0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port or free_port()
        self.delay = delay
        self.mode = Mode.PASS
        self.connections = 0  # accepted so far, for assertions that traffic really went through
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"fault proxy on {self.port} did not start")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def set(self, mode: Mode) -> None:
        """Switch mode; RESET closes every open connection now."""
        self.mode = mode
        if mode is Mode.RESET:
            self._loop.call_soon_threadsafe(self._reset_all)

    def close(self) -> None:
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        self._thread.join(timeout=10)

    async def _shutdown(self) -> None:
        self._reset_all()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop.stop()

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                sock = writer.get_extra_info("socket")
                if sock is not None:  # SO_LINGER 0: the peer sees a reset, not a clean end
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                writer.close()

    # Hooks a proxy that speaks TLS or HTTP overrides (tests/faults/test_api.py NamespaceHangProxy).
    server_tls: ssl.SSLContext | None = None
    upstream_tls: ssl.SSLContext | None = None

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Client → upstream bytes; the other direction is always `_pipe`."""
        await self._pipe(reader, writer)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.server_tls))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            self._reset_all()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            if self.mode is Mode.RESET:
                self._reset_all()
                return
            if self.mode is Mode.S3_UNAVAILABLE:
                await reader.read(65536)
                writer.write(SLOW_DOWN)
                await writer.drain()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream, ssl=self.upstream_tls)
            except OSError:
                return
            self._writers.add(up_writer)
            try:
                await asyncio.gather(self._forward(reader, up_writer), self._pipe(up_reader, writer))
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                while self.mode is Mode.BLACKHOLE:  # hold the bytes: the peer waits, as on a dead path
                    await asyncio.sleep(0.1)
                if self.mode is Mode.DELAY:
                    await asyncio.sleep(self.delay)
                if self.mode in (Mode.RESET, Mode.S3_UNAVAILABLE):
                    break
                writer.write(chunk)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()


class CutReplies(FaultProxy):
    """Passes bytes both ways, but resets a connection once its reply passes `after` bytes (a GET cut off
    mid-body, as a load balancer's restart does), at most `times` connections (None: every one). HEADs and
    other small replies pass. `cuts` counts the connections cut."""

    def __init__(self, upstream_port: int, after: int, times: int | None = None) -> None:
        super().__init__(upstream_port)
        self.after, self.times, self.cuts = after, times, 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        returned = 0
        try:
            while chunk := await reader.read(65536):
                returned += len(chunk)
                if returned > self.after and (self.times is None or self.cuts < self.times):
                    self.cuts += 1
                    self._reset_all()
                    return
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await FaultProxy._pipe(self, reader, writer)  # requests pass uncounted


_ACCESS_DENIED_BODY = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>"
                       b"<Message>Access Denied.</Message></Error>")
ACCESS_DENIED = (b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                 b"Content-Length: " + str(len(_ACCESS_DENIED_BODY)).encode() + b"\r\n\r\n" + _ACCESS_DENIED_BODY)
_CLIENT: contextvars.ContextVar[asyncio.StreamWriter] = contextvars.ContextVar("client")


class DenyObjectGets(FaultProxy):
    """An S3 endpoint (path-style) that refuses every GET of an object with 403 AccessDenied while HEADs,
    listings and everything else pass: a store whose objects are encrypted with a key the reader may not use
    (SSE-KMS without kms:Decrypt: the HEAD needs no key). Reads each request's head and Content-Length body
    (no chunked uploads through it). `denied` counts the refusals."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.denied = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _CLIENT.set(writer)  # the tasks _handle gathers copy this context: _forward answers the client
        await super()._handle(reader, writer)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, target = head.split(b" ", 2)[:2]
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length) if length else b""
                path = target.split(b"?", 1)[0].strip(b"/")
                if method == b"GET" and b"/" in path:  # /bucket/key: an object, not a listing
                    self.denied += 1
                    client = _CLIENT.get()
                    client.write(ACCESS_DENIED)
                    await client.drain()
                    client.close()
                    writer.close()  # the upstream's side ends too, so the reply pipe stops
                    return
                writer.write(head + body)
                await writer.drain()
