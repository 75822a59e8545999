"""A small CPIX 2.3 / SPEKE v2 key server for the test suite, on 127.0.0.1 and a free port.

It answers a POSTed CPIX request the way a SPEKE key provider does: the same document back with every
placeholder filled in. Keys are random (os.urandom) and stable per (content id, KID) for the life of the
server, so a retried request gets the same key. PSSH boxes (widevine, playready, clearkey) are minimal
version 1 boxes that list the KID and carry no data; ContentProtectionData wraps the same box in a
``<cenc:pssh>``; HLSSignalingData is an ``#EXT-X-KEY`` (media) or ``#EXT-X-SESSION-KEY`` (master) line.

``mode`` can be changed at any time:

* ``"ok"``: answer normally;
* ``"forbidden"``: 403; ``"error"``: 500;
* ``"flaky"``: the next ``flaky_failures`` requests get 503, then answer normally;
* ``"malformed"``: 200 with a body that is not XML;
* ``"short-key"``: 200 with every key cut to 15 bytes (the first 15 of the key ``keys_for`` reports).

With ``token`` set, a request without ``Authorization: Bearer <token>`` gets 401. Like a SPEKE v2 provider
it answers 422 to a request without ``X-Speke-Version: 2.0``, ``CPIX@version="2.3"``, ``CPIX@contentId`` or
``ContentKey@commonEncryptionScheme``.
"""

from __future__ import annotations

import base64
import functools
import os
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal

CPIX_NS = "urn:dashif:org:cpix"
PSKC_NS = "urn:ietf:params:xml:ns:keyprov:pskc"
ET.register_namespace("cpix", CPIX_NS)
ET.register_namespace("pskc", PSKC_NS)

WIDEVINE = uuid.UUID("edef8ba9-79d6-4ace-a3c8-27dcd51d21ed")
PLAYREADY = uuid.UUID("9a04f079-9840-4286-ab92-e65be0885f95")
FAIRPLAY = uuid.UUID("94ce86fb-07ff-4f43-adb8-93d2fa968ca2")
CLEARKEY = uuid.UUID("1077efec-c0b2-4d02-ace3-3c1e52e2fb4b")
PSSH_SYSTEMS = {WIDEVINE, PLAYREADY, CLEARKEY}

Mode = Literal["ok", "forbidden", "error", "flaky", "malformed", "short-key"]
USER_AGENT = "kubemam-test-cpix-server"


def pssh_box(system_id: uuid.UUID, kids: list[uuid.UUID]) -> bytes:
    """A version 1 pssh box: size, 'pssh', version 1, flags 0, system ID, KID count, KIDs, data size 0."""
    payload = (bytes([1, 0, 0, 0]) + system_id.bytes + len(kids).to_bytes(4, "big")
               + b"".join(kid.bytes for kid in kids) + (0).to_bytes(4, "big"))
    return (8 + len(payload)).to_bytes(4, "big") + b"pssh" + payload


def _q(name: str, ns: str = CPIX_NS) -> str:
    return f"{{{ns}}}{name}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class CpixKeyServer:
    """``with CpixKeyServer() as server: fetch_keys(server.url, ...)``."""

    def __init__(self, *, token: str | None = None, mode: Mode = "ok", flaky_failures: int = 2,
                 flaky_status: int = 503) -> None:
        self.token = token
        self.mode: Mode = mode
        self.flaky_failures = flaky_failures
        self.flaky_status = flaky_status  # what "flaky" answers before it recovers
        self.requests: list[ReceivedRequest] = []
        self._keys: dict[tuple[str, uuid.UUID], bytes] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------

    def __enter__(self) -> CpixKeyServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, headers, answer = server._answer(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server name
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        serve = functools.partial(self._httpd.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve, name="cpix-key-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        assert self._httpd is not None, "use CpixKeyServer as a context manager"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/speke/v2.0/copyProtection"

    # -- what tests look at -----------------------------------------------------------------------------------

    def keys_for(self, content_id: str) -> dict[uuid.UUID, bytes]:
        """The (16-byte) keys handed out for a content id, by KID."""
        with self._lock:
            return {kid: key for (cid, kid), key in self._keys.items() if cid == content_id}

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    # -- answering --------------------------------------------------------------------------------------------

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append(ReceivedRequest(path=path, headers=headers, body=body))
            mode = self.mode
            if mode == "flaky":
                if self.flaky_failures > 0:
                    self.flaky_failures -= 1
                    return self.flaky_status, {"Content-Type": "text/plain"}, b"temporarily unavailable, try again"
                mode = "ok"
        text = {"Content-Type": "text/plain"}
        lowered = {name.lower(): value for name, value in headers.items()}
        if self.token is not None and lowered.get("authorization") != f"Bearer {self.token}":
            return 401, {**text, "WWW-Authenticate": "Bearer"}, b"missing or wrong bearer token"
        if mode == "forbidden":
            return 403, text, b"this client may not ask for keys for this content"
        if mode == "error":
            return 500, text, b"internal key server error"
        speke = lowered.get("x-speke-version")
        if speke != "2.0":
            return 422, text, b"Unsupported SPEKE version"
        response = {"Content-Type": "application/xml", "X-Speke-Version": speke, "X-Speke-User-Agent": USER_AGENT}
        if mode == "malformed":
            return 200, response, b"<html><body>Service Unavailable</body"
        try:
            document = self._fill(body, short=mode == "short-key")
        except _Refused as refused:
            return refused.status, text, refused.message.encode()
        return 200, response, document

    def _key(self, content_id: str, kid: uuid.UUID) -> bytes:
        with self._lock:
            return self._keys.setdefault((content_id, kid), os.urandom(16))

    def _fill(self, body: bytes, *, short: bool) -> bytes:
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            raise _Refused(422, f"Malformed CPIX document: {exc}") from None
        if root.tag != _q("CPIX"):
            raise _Refused(422, "Not a CPIX document")
        content_id = root.get("contentId")
        if not content_id:
            raise _Refused(422, "Missing CPIX@contentId")
        version = root.get("version")
        if not version:
            raise _Refused(422, "Missing CPIX@version")
        if version != "2.3":
            raise _Refused(422, "Unsupported CPIX@version")
        key_list = root.find(_q("ContentKeyList"))
        if key_list is None:
            raise _Refused(422, "Missing ContentKeyList")
        schemes = set()
        for element in key_list.findall(_q("ContentKey")):
            kid = uuid.UUID(element.get("kid", ""))
            scheme = element.get("commonEncryptionScheme")
            if not scheme:
                raise _Refused(422, f"Missing ContentKey@commonEncryptionScheme for KID {kid}")
            schemes.add(scheme)
            key = self._key(content_id, kid)
            for child in list(element):
                element.remove(child)
            data = ET.SubElement(element, _q("Data"))
            secret = ET.SubElement(data, _q("Secret", PSKC_NS))
            ET.SubElement(secret, _q("PlainValue", PSKC_NS)).text = _b64(key[:15] if short else key)
        if len(schemes) > 1:
            raise _Refused(422, "Non compliant ContentKey@commonEncryptionScheme combination")
        if root.find(_q("ContentKeyUsageRuleList")) is None:
            raise _Refused(422, "Missing CPIX encryption contract")
        systems = root.find(_q("DRMSystemList"))
        for drm in systems.findall(_q("DRMSystem")) if systems is not None else []:
            self._signal(drm)
        document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        return document

    @staticmethod
    def _signal(drm: ET.Element) -> None:
        kid = uuid.UUID(drm.get("kid", ""))
        system_id = uuid.UUID(drm.get("systemId", ""))
        box = pssh_box(system_id, [kid]) if system_id in PSSH_SYSTEMS else None
        for element in drm.findall(_q("PSSH")):
            if box is None:
                drm.remove(element)
            else:
                element.text = _b64(box)
        for element in drm.findall(_q("ContentProtectionData")):
            if box is None:
                drm.remove(element)
            else:
                fragment = f'<cenc:pssh xmlns:cenc="urn:mpeg:cenc:2013">{_b64(box)}</cenc:pssh>'
                element.text = _b64(fragment.encode())
        if system_id == FAIRPLAY:
            attributes = (f'METHOD=SAMPLE-AES,URI="skd://{kid.hex}",KEYFORMAT="com.apple.streamingkeydelivery",'
                          'KEYFORMATVERSIONS="1"')
        else:
            uri = f"data:text/plain;base64,{_b64(box)}" if box is not None else f"urn:uuid:{kid}"
            attributes = (f'METHOD=SAMPLE-AES,URI="{uri}",KEYID=0x{kid.hex},KEYFORMAT="urn:uuid:{system_id}",'
                          'KEYFORMATVERSIONS="1"')
        for element in drm.findall(_q("HLSSignalingData")):
            tag = "#EXT-X-SESSION-KEY" if element.get("playlist") == "master" else "#EXT-X-KEY"
            element.text = _b64(f"{tag}:{attributes}\n".encode())
