"""Play OTT packages in a real browser: Debian's Chromium driven by Playwright, with Shaka Player (tests/browser/).

    ensure_browser_deps()
    with serve_directory(package_dir) as base_url:
        result = play(f"{base_url}/manifest.mpd", clearkeys={kid_hex: key_hex}, screenshot=tmp_path / "frame.png")
    assert result["ok"], result
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
PLAY_SCRIPT = BROWSER_DIR / "play.mjs"
CHROMIUM = os.environ.get("KUBEMAM_CHROMIUM", "/usr/bin/chromium")

MIME_TYPES = {
    ".mpd": "application/dash+xml",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m4s": "video/mp4",
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".vtt": "text/vtt",
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".json": "application/json",
}


class BrowserDepsError(RuntimeError):
    pass


def _installed(package: str, version: str) -> bool:
    manifest = BROWSER_DIR / "node_modules" / package / "package.json"
    return manifest.is_file() and json.loads(manifest.read_text()).get("version") == version


def ensure_browser_deps() -> None:
    """Chromium, node and npm must be there (no skipping); the pinned npm packages are installed by `npm ci`."""
    missing = [f"{name} ({hint})" for name, found, hint in (
        ("chromium", Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is not None,
         "apt-get install chromium, or set KUBEMAM_CHROMIUM"),
        ("node", shutil.which("node") is not None, "Node.js 20+"),
        ("npm", shutil.which("npm") is not None, "npm, with Node.js"),
    ) if not found]
    if missing:
        raise BrowserDepsError("the browser playback tests need: " + "; ".join(missing) + " (.ci/run installs them)")
    pins: dict[str, str] = json.loads((BROWSER_DIR / "package.json").read_text())["dependencies"]
    if all(_installed(name, version) for name, version in pins.items()):
        return
    with open(BROWSER_DIR / ".npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel pytest runs install once
        if all(_installed(name, version) for name, version in pins.items()):
            return
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0:
            raise BrowserDepsError(f"npm ci in {BROWSER_DIR} failed:\n{done.stdout}\n{done.stderr}")


class _Handler(SimpleHTTPRequestHandler):
    """Static files with CORS, OTT MIME types and single byte ranges (SegmentBase indexRange, HLS BYTERANGE)."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Expose-Headers", "Content-Length, Content-Range")
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def do_OPTIONS(self) -> None:  # noqa: N802 - the http.server naming
        self.send_response(HTTPStatus.NO_CONTENT)
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Range")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        path = Path(self.translate_path(self.path))
        if match is None or not path.is_file() or match.groups() == ("", ""):
            super().do_GET()
            return
        size = path.stat().st_size
        first, last = match.groups()
        if first:
            start, end = int(first), min(int(last) if last else size - 1, size - 1)
        else:  # a suffix range: the last N bytes
            start, end = max(size - int(last), 0), size - 1
        if start > end or start >= size:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_directory(path: Path) -> Iterator[str]:
    """Serve `path` on 127.0.0.1 at a free port; yields the base URL (no trailing slash)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(path)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="serve-directory", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def play(manifest_url: str, clearkeys: dict[str, str] | None = None, seconds: float = 5.0,
         screenshot: Path | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Play the manifest in headless Chromium until currentTime > seconds; play.mjs's JSON result.

    `ok` is false (not an exception) when playback stalled or Shaka reported an error.
    """
    config = {"url": manifest_url, "clearkeys": clearkeys, "seconds": seconds, "timeout": timeout,
              "screenshot": str(screenshot) if screenshot else None}
    done = subprocess.run(["node", str(PLAY_SCRIPT), "--config", json.dumps(config)], cwd=BROWSER_DIR,
                          capture_output=True, text=True, timeout=timeout + 60,
                          env={**os.environ, "KUBEMAM_CHROMIUM": CHROMIUM})
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as e:
        raise RuntimeError(f"play.mjs printed no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}") from e
    result["exitCode"] = done.returncode
    return result
