"""The fault proxy itself: what the fault scenarios rely on (pass, blackhole, reset, 503 SlowDown)."""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.faults.proxy import FaultProxy, Mode


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture()
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def test_modes(upstream: int) -> None:
    with FaultProxy(upstream) as proxy:
        assert _get(proxy.url) == b"hello"
        proxy.set(Mode.BLACKHOLE)
        with pytest.raises((socket.timeout, TimeoutError, urllib.error.URLError)):
            _get(proxy.url, timeout=1.0)
        proxy.set(Mode.S3_UNAVAILABLE)
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(proxy.url)
        assert refused.value.code == 503 and b"SlowDown" in refused.value.read()
        proxy.set(Mode.RESET)
        with pytest.raises((ConnectionError, urllib.error.URLError, http.client.RemoteDisconnected)):
            _get(proxy.url)
        proxy.set(Mode.PASS)
        assert _get(proxy.url) == b"hello"
        assert proxy.connections >= 5
