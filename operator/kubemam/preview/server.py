"""The preview's HTTP server: 127.0.0.1 only, every path under a random token (the page can hold content keys,
and other local users can reach loopback ports), Host checked against DNS rebinding.

    /<token>/              the page, gathered afresh and with fresh presigned URLs on every load
    /<token>/player.js     the local Shaka Player file, when one was found
    /<token>/pkg/<format>/<path>
                           a package: its manifests (.mpd, .m3u8) are read from S3 and answered here, so their
                           relative URLs come back here; every other file (segments, init, keys' PSSH-free
                           media) is a 302 to a presigned URL, so the browser fetches media from S3 itself.
"""

from __future__ import annotations

import logging
import posixpath
import secrets
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from kubemam.preview.model import PageModel, PreviewError
from kubemam.preview.page import render
from kubemam.preview.player import LOCAL_URL, PlayerScript
from kubemam.storage.uri import S3Uri

log = logging.getLogger(__name__)

CONTENT_TYPES = {".mp4": "video/mp4", ".m4s": "video/mp4", ".m4a": "audio/mp4", ".m4v": "video/mp4",
                 ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".vtt": "text/vtt",
                 ".json": "application/json", ".mpd": "application/dash+xml",
                 ".m3u8": "application/vnd.apple.mpegurl", ".aac": "audio/aac"}
MANIFESTS = (".mpd", ".m3u8")
DEFAULT_EXPIRES = 3600


def content_type(key: str) -> str | None:
    return CONTENT_TYPES.get(posixpath.splitext(key)[1].lower())


def make_signer(s3: Any, expires: int = DEFAULT_EXPIRES) -> Callable[[str], str]:
    """s3:// URI → a presigned GET URL; the content type is set by the name (uploads carry none)."""
    def sign(uri: str) -> str:
        where = S3Uri.parse(uri)
        params = {"Bucket": where.bucket, "Key": where.key}
        kind = content_type(where.key)
        if kind:
            params["ResponseContentType"] = kind
        return str(s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires))
    return sign


def package_file(model: PageModel, fmt: str, path: str) -> str | None:
    """The s3:// URI of a file inside one of the asset's packages; None for anything outside them."""
    source = next((s for s in model.sources if s.id == f"package-{fmt}" and s.kind != "progressive"), None)
    parts = path.split("/")
    if source is None or any(p in ("", ".", "..") for p in parts):
        return None
    return f"{source.uri.rsplit('/', 1)[0]}/{path}"


class PreviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, gather: Callable[[], PageModel], s3: Any, player: PlayerScript,
                 expires: int = DEFAULT_EXPIRES) -> None:
        try:
            super().__init__(("127.0.0.1", port), _Handler)
        except OSError as err:  # not "cannot reach the cluster", which is what the CLI says of other OSErrors
            raise PreviewError(f"cannot listen on 127.0.0.1:{port}: {err.strerror or err}") from err
        self.token = secrets.token_urlsafe(18)
        self.gather, self.s3, self.player = gather, s3, player
        self.sign = make_signer(s3, expires)
        self.lock = threading.Lock()
        self.model = gather()  # fails here, before a URL is printed, when the asset cannot be shown

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.token}/"

    def fresh_model(self) -> PageModel:
        model = self.gather()
        with self.lock:
            self.model = model
        return model

    def current_model(self) -> PageModel:
        with self.lock:
            return self.model


class _Handler(BaseHTTPRequestHandler):
    server: PreviewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # paths carry the token; nothing here is worth a line

    def _send(self, status: HTTPStatus, body: bytes = b"", kind: str = "text/plain; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")  # the page may hold content keys
        self.send_header("Referrer-Policy", "no-referrer")  # the token stays out of requests to S3
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self) -> str | None:
        """The path below the token, or None (answered 404/403 already) for anything else."""
        host = self.headers.get("Host", "")
        if host not in (f"127.0.0.1:{self.server.port}", f"localhost:{self.server.port}"):
            self._send(HTTPStatus.FORBIDDEN, b"kubemam preview answers only 127.0.0.1\n")
            return None
        path = unquote(urlsplit(self.path).path)
        prefix = f"/{self.server.token}/"
        if not secrets.compare_digest(path[:len(prefix)].encode(), prefix.encode()):
            self._send(HTTPStatus.NOT_FOUND, b"not found\n")
            return None
        return path[len(prefix):]

    def do_HEAD(self) -> None:  # noqa: N802 - the http.server naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        rest = self._route()
        if rest is None:
            return
        if rest in ("", "index.html"):
            try:
                model = self.server.fresh_model()
            except Exception as err:  # the cluster or S3 went away: say so in the page's place
                log.warning("preview: could not read the asset again: %s", err)
                self._send(HTTPStatus.BAD_GATEWAY, f"kubemam preview: could not read the asset: {err}\n".encode())
                return
            html = render(model, self.server.sign, self.server.player).encode()
            self._send(HTTPStatus.OK, html, "text/html; charset=utf-8")
        elif rest == LOCAL_URL and self.server.player.path is not None:
            self._send(HTTPStatus.OK, self.server.player.path.read_bytes(), "text/javascript; charset=utf-8",
                       {"Cache-Control": "max-age=3600"})
        elif rest.startswith("pkg/") and rest.count("/") >= 2:
            _, fmt, path = rest.split("/", 2)
            self._package(fmt, path)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n")

    def _package(self, fmt: str, path: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        uri = package_file(self.server.current_model(), fmt, path)
        if uri is None:
            self._send(HTTPStatus.NOT_FOUND, b"not part of this asset's packages\n")
            return
        if not path.endswith(MANIFESTS):
            self._send(HTTPStatus.FOUND, headers={"Location": self.server.sign(uri)})
            return
        where = S3Uri.parse(uri)
        try:
            body = self.server.s3.get_object(Bucket=where.bucket, Key=where.key)["Body"].read()
        except ClientError as err:
            missing = err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404")
            self._send(HTTPStatus.NOT_FOUND if missing else HTTPStatus.BAD_GATEWAY, f"{uri}: {err}\n".encode())
            return
        except BotoCoreError as err:
            self._send(HTTPStatus.BAD_GATEWAY, f"{uri}: {err}\n".encode())
            return
        self._send(HTTPStatus.OK, bytes(body), content_type(path) or "application/octet-stream")
