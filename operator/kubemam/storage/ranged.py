"""One S3 object served to ffmpeg on loopback, by ranges: a chunk pod reads its part of the master, not all of it.

ffmpeg opens http://127.0.0.1:<port>/<name>, seeks with Range requests (input seeking, -ss before -i), and each
request becomes one ranged GetObject pinned to the version the caller checked (If-Match on its ETag: a master
replaced mid-read fails the read, never mixes two versions). No signed URL is handed to ffmpeg, so nothing that
grants access to the bucket appears on a command line; the S3 client keeps its timeouts and retries. Bytes
pulled from S3 are counted, so a step can say what it read.

hide_sound: a QuickTime / MP4 master's sound tracks are served renamed `free` (media/isobmff.py), so a demuxer
that only needs the picture does not index every audio sample of the programme.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kubemam.media.isobmff import patch, tracks_to_hide
from kubemam.storage.uri import S3Uri

log = logging.getLogger(__name__)
BLOCK = 64 * 1024
SEND_BUFFER = 256 * 1024
FIRST_WINDOW = 256 * 1024  # the first GetObject of a request; each next one doubles, up to MAX_WINDOW
MAX_WINDOW = 4 * 1024 * 1024  # what a request ffmpeg abandons can cost beyond what it read
RESUMES = 3  # a body S3 cuts off is asked for again from where it stopped, this many times a request
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _failure(err: ClientError | BotoCoreError) -> str:
    """S3's error code, or the kind of failure that brought no answer (a timeout, a cut-off body)."""
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code", ""))
    return type(err).__name__


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single-range header, inclusive; the whole object without one; None if unsatisfiable."""
    if not header:
        return (0, size - 1) if size else None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text:  # a suffix: the last N bytes
        if not last_text or int(last_text) == 0:
            return None
        return max(0, size - int(last_text)), size - 1
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    return (first, last) if first <= last else None


class RangedObject:
    """`with RangedObject(s3, uri, etag, size) as url:` — ffmpeg reads url; .bytes_read counts what S3 sent."""

    def __init__(self, s3: Any, uri: S3Uri, etag: str, size: int, name: str = "master",
                 hide_sound: bool = False) -> None:
        self.s3, self.uri, self.etag, self.size, self.name = s3, uri, etag, size, name
        self.hide_sound = hide_sound
        self.hidden: list[int] = []  # offsets of the track types served as `free`
        self.bytes_read = 0
        # Why a read from S3 failed (refused: the object changed; or cut off, timed out): the first failure, for
        # the caller's error. ffmpeg may take a read cut short for the end of its input and exit 0, so a caller
        # never keeps what ffmpeg made while this is set.
        self.refused: str | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def _window(self, first: int, last: int) -> Any:
        """One ranged GetObject of this version of the object: its streaming body."""
        return self.s3.get_object(Bucket=self.uri.bucket, Key=self.uri.key, IfMatch=self.etag,
                                  Range=f"bytes={first}-{last}")["Body"]

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_read += n

    def _box_reader(self) -> Any:
        """(offset, length) -> bytes for the box walk, through 64 KiB blocks kept while it runs: box headers
        sit close together, so a walk costs a handful of small GETs."""
        blocks: dict[int, bytes] = {}

        def block(number: int) -> bytes:
            if number not in blocks:
                first = number * BLOCK
                body = self._window(first, min(self.size, first + BLOCK) - 1)
                try:
                    blocks[number] = body.read()
                finally:
                    body.close()
                self._count(len(blocks[number]))
            return blocks[number]

        def read(offset: int, length: int) -> bytes:
            end = min(offset + length, self.size)
            if offset >= end:
                return b""
            data = b"".join(block(n) for n in range(offset // BLOCK, (end - 1) // BLOCK + 1))
            start = offset - (offset // BLOCK) * BLOCK
            return data[start:start + end - offset]

        return read

    def _find_sound(self) -> list[int]:
        try:
            return tracks_to_hide(self._box_reader(), self.size)
        except (ClientError, BotoCoreError) as err:  # an optimisation only: ffmpeg's reads meet the same fault
            log.warning("could not read %s's track list (%s); serving every track", self.uri, type(err).__name__)
            return []

    def __enter__(self) -> str:
        owner = self
        if self.hide_sound:
            self.hidden = self._find_sound()
            if self.hidden:
                log.info("%s: %d sound track(s) hidden from the demuxer", self.uri, len(self.hidden))

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                # A small send buffer: what ffmpeg has not read yet is bytes already pulled from S3.
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                super().setup()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                log.debug("ranged read: " + format, *args)

            def _head(self) -> tuple[int, int] | None:
                span = parse_range(self.headers.get("Range"), owner.size)
                if span is None:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{owner.size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                return span

            def _start(self, span: tuple[int, int]) -> None:
                first, last = span
                self.send_response(206 if self.headers.get("Range") else 200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(last - first + 1))
                self.send_header("Content-Range", f"bytes {first}-{last}/{owner.size}")
                self.end_headers()

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's names
                span = self._head()
                if span is not None:
                    self._start(span)

            def do_GET(self) -> None:  # noqa: N802
                span = self._head()
                if span is None:
                    return
                first, last = span
                window = FIRST_WINDOW
                try:
                    body = owner._window(first, min(last, first + window - 1))
                except (ClientError, BotoCoreError) as err:
                    code = _failure(err)
                    owner.refused = owner.refused or f"{owner.uri}: {code}"
                    self.send_error(412 if code in ("PreconditionFailed", "412") else 502)
                    return
                self._start(span)
                position = first
                resumed = 0
                try:
                    while True:
                        try:
                            while chunk := body.read(BLOCK):
                                owner._count(len(chunk))
                                self.wfile.write(patch(chunk, position, owner.hidden))
                                position += len(chunk)
                        except BotoCoreError as err:
                            # S3 cut the body off (it resets a GET left idle while ffmpeg is slow to read, and
                            # botocore retries no body): the rest is asked for again from where it stopped, of
                            # the same version, a few times before ffmpeg's read is failed.
                            resumed += 1
                            if resumed > RESUMES:
                                raise
                            log.warning("ranged read of %s cut off at byte %d (%s); asking again from there",
                                        owner.uri, position, type(err).__name__)
                        finally:
                            body.close()
                        if position > last:
                            return
                        # ffmpeg asks for everything to the end and closes when it seeks: S3 is asked in
                        # growing windows, so a request it abandons costs a window, not the rest of the file.
                        window = min(window * 2, MAX_WINDOW)
                        body = owner._window(position, min(last, position + window - 1))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # ffmpeg seeked or has what it needs
                except (ClientError, BotoCoreError) as err:  # mid-body: the connection is cut, ffmpeg's read fails
                    owner.refused = owner.refused or f"{owner.uri}: {_failure(err)}"

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="ranged-object", daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/{self.name}"

    def __exit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
