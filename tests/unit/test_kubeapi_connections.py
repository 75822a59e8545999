"""Every KubeApi call hands its connection back to the pool: calls made one after another share one
connection. A write whose answer was never read kept its connection checked out, so the next call opened a
new one, a TLS handshake on both sides per Job, Event or ConfigMap written (seen in a profile of 1,000 assets
created at once: about a tenth of the operator's handler time)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from kubemam.kubeapi import KubeApi, new_api_client
from tests.unit.test_kubeapi_timeout import CALLS

# One answer that every call can read: an object, a list and a ConfigMap's data at once.
ANSWER = json.dumps({"metadata": {"uid": "u", "resourceVersion": "1"}, "items": [], "data": {}}).encode()


class _Counting(ThreadingHTTPServer):
    daemon_threads = True
    connections = 0

    def get_request(self):  # type: ignore[no-untyped-def]
        type(self).connections += 1
        return super().get_request()


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the API server

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[tuple[str, type[_Counting]]]:
    counting = type("Server", (_Counting,), {"connections": 0})
    httpd = counting(("127.0.0.1", 0), _Answer)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", counting
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("method", sorted(CALLS))
def test_calls_one_after_another_share_one_connection(method: str, server: tuple[str, type[_Counting]]) -> None:
    url, counting = server
    api = KubeApi(new_api_client(client.Configuration(host=url)), timeout=(2.0, 5.0))
    for _ in range(5):
        getattr(api, method)(*CALLS[method])
    assert counting.connections == 1, f"{method}: 5 calls opened {counting.connections} connections"
