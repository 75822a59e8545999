"""The preview page without a cluster: the page model from an asset's status and what ingest wrote beside it,
the page's JSON (which text in the asset cannot break out of), the Shaka Player lookup, and the server on
loopback (token, Host check, package paths, presigned redirects)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from kubemam.media.thumbnails import sprite_vtt
from kubemam.preview.command import preview_client
from kubemam.preview.model import PreviewError, build_page
from kubemam.preview.page import render, safe_json
from kubemam.preview.player import CDN_INTEGRITY, CDN_URL, SHAKA_VERSION, PlayerScript, find_player
from kubemam.preview.server import PreviewServer

LIB = "s3://kubemam-library/assets/ns/clip/ingest/abc"
PKG = "s3://kubemam-library/assets/ns/clip/packages/def"
NPM_COPY = Path(__file__).resolve().parents[1] / "browser" / "node_modules" / "shaka-player"


def asset(note: str = "take a break") -> dict[str, Any]:
    return {
        "metadata": {"name": "clip", "namespace": "ns"},
        "spec": {"source": {"uri": "s3://kubemam-library/in/clip.mov"}, "metadata": {"title": "Clip"},
                 "timeline": {"frameRate": "25", "startTimecode": "10:00:00:00"},
                 "markers": [{"name": "break-1", "kind": "adBreak", "start": "10:00:03:00", "note": note},
                             {"name": "part", "kind": "segment", "start": "10:00:01:00", "end": "10:00:02:12"}]},
        "status": {
            "phase": "Ready",
            "technical": {"durationSeconds": 10.0, "startTimecode": "10:00:00:00"},
            "qc": {"verdict": "Failed", "loudness": {"integratedLufs": -19.3, "truePeakDbtp": -2.0},
                   "issues": [{"check": "loudness", "severity": "error", "message": "integrated loudness -19.3"}],
                   "issueCount": 3, "reportUri": f"{LIB}/qc.json", "loudnessUri": f"{LIB}/loudness.json"},
            "previews": {"proxyUri": f"{LIB}/proxy.mp4", "posterUri": f"{LIB}/poster.jpg",
                         "spriteUri": f"{LIB}/sprite-001.jpg", "spriteIndexUri": f"{LIB}/sprite.vtt",
                         "spriteSheets": 2, "thumbnails": 5},
            "renditions": [{"name": "h264-180p", "kind": "video", "uri": "s3://kubemam-library/r/h264-180p.mp4",
                            "specHash": "x", "width": 320, "height": 180, "bitrate": 300000}],
            "packages": [{"format": "dash", "manifestUri": f"{PKG}/manifest.mpd", "keyIds": ["k"],
                          "drmSystems": ["clearkey"], "scheme": "cenc"},
                         {"format": "hls", "manifestUri": f"{PKG}/master.m3u8"}],
        },
    }


REPORT = {"verdict": "Failed", "issues": [
    {"check": "black", "severity": "warning", "start": "10:00:00:00", "end": "10:00:01:00", "message": "black 1s"},
    {"check": "freeze", "severity": "warning", "start": "10:00:06:00", "end": "10:00:08:00", "message": "frozen"},
    {"check": "loudness", "severity": "error", "message": "integrated loudness -19.3"}]}
LOUDNESS = {"targetLufs": -23.0, "stepSeconds": 1.0,
            "points": [[float(s), -30.0 + s, -32.0 + (5 if s == 5 else 0)] for s in range(10)]}
VTT = sprite_vtt(5, 2.0, 10.0, 3, 1, (160, 90))  # what ingest writes: 5 thumbnails on 2 sheets of 3


def page(**kwargs: Any) -> Any:
    args: dict[str, Any] = {"qc_report": REPORT, "loudness": LOUDNESS, "sprite_vtt": VTT,
                            "clear_keys": {"00" * 16: "11" * 16}, "tolerance_lu": 1.0}
    return build_page(asset(kwargs.pop("note", "take a break")), **(args | kwargs))


def test_timeline_places_every_qc_issue_and_marker_in_seconds_from_the_first_frame() -> None:
    model = page()
    placed = [(e.source, e.check, e.start, e.end) for e in model.timeline]
    assert placed == [
        ("qc", "loudness", None, None),  # the integrated value has no place on the timeline
        ("qc", "black", 0.0, 1.0),
        ("marker", "segment", 1.0, 2.48),
        ("marker", "adBreak", 3.0, None),
        ("qc", "loudness", 5.0, None),  # the loudest short-term moment, from the series
        ("qc", "freeze", 6.0, 8.0),
    ]
    assert model.timeline[4].start_timecode == "10:00:05:00" and "-27.0 LUFS" in model.timeline[4].message
    assert model.start_timecode == "10:00:00:00" and model.duration == 10.0
    assert model.notes == []


def test_without_the_report_the_capped_issues_in_status_are_shown_and_said_to_be_capped() -> None:
    model = page(qc_report=None)
    assert [e.check for e in model.timeline if e.source == "qc"] == ["loudness", "loudness"]
    assert model.notes == ["showing 1 of 3 QC issues (the report was not readable)"]


def test_sources_loudness_and_thumbnails() -> None:
    model = page()
    assert [(s.id, s.kind, s.encrypted) for s in model.sources] == [
        ("proxy", "progressive", False), ("rendition-h264-180p", "progressive", False),
        ("package-dash", "dash", True), ("package-hls", "hls", False)]
    assert model.loudness is not None and len(model.loudness.points) == 10
    assert model.loudness.target_lufs == -23.0 and model.loudness.tolerance_lu == 1.0
    assert [(t.start, t.sheet.rsplit("/", 1)[1], t.x, t.y) for t in model.thumbnails] == [
        (0.0, "sprite-001.jpg", 0, 0), (2.0, "sprite-001.jpg", 160, 0), (4.0, "sprite-001.jpg", 320, 0),
        (6.0, "sprite-002.jpg", 0, 0), (8.0, "sprite-002.jpg", 160, 0)]
    assert "11" * 16 not in repr(model)  # keys stay out of reprs (and so out of logs)


def test_an_asset_not_yet_ingested_says_so() -> None:
    body = asset()
    body["status"] = {"phase": "Pending"}
    model = build_page(body)
    assert model.sources == [] and [e.check for e in model.timeline] == ["segment", "adBreak"]
    assert model.notes == ["nothing to play yet: the asset has no proxy, rendition or package in its status"]
    body["spec"] = {"source": {}}
    with pytest.raises(PreviewError, match="not one this kubemam understands"):
        build_page(body)


def _data(html: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="preview-data">(.*?)</script>', html, re.S)
    assert match is not None
    return dict(json.loads(match.group(1)))


def test_text_in_the_asset_cannot_break_out_of_the_page_data() -> None:
    hostile = "</script><script>alert(1)</script><!-- & \u2028"
    model = page(note=hostile)
    html = render(model, lambda uri: "https://s3.example/" + uri[5:] + "?sig=1&x=2", PlayerScript("none"))
    assert "alert(1)" not in html.replace("alert(1)\\u003c", "")  # only inside an escaped string
    assert html.count("</script>") == 2  # the data element's and the script's own
    data = _data(html)
    assert next(e for e in data["timeline"] if e["label"] == "break-1")["message"] == hostile
    assert "<" not in safe_json({"a": "<>&"}) and json.loads(safe_json({"a": "<>&"})) == {"a": "<>&"}
    # Files are signed URLs; packages go through the server; keys are there for ClearKey.
    sources = {s["id"]: s["url"] for s in data["sources"]}
    assert sources["proxy"] == "https://s3.example/kubemam-library/assets/ns/clip/ingest/abc/proxy.mp4?sig=1&x=2"
    assert sources["package-dash"] == "pkg/dash/manifest.mpd" and sources["package-hls"] == "pkg/hls/master.m3u8"
    assert set(data["sheets"]) == {f"{LIB}/sprite-001.jpg", f"{LIB}/sprite-002.jpg"}
    assert data["clearKeys"] == {"00" * 16: "11" * 16} and data["player"]["kind"] == "none"


def test_player_script_lookup(tmp_path: Path) -> None:
    npm = tmp_path / "node_modules" / "shaka-player" / "dist" / "shaka-player.compiled.js"
    npm.parent.mkdir(parents=True)
    npm.write_text("// shaka")
    assert find_player(None, {}, [tmp_path / "nowhere", tmp_path]) == PlayerScript("local", path=npm.resolve())
    assert find_player(None, {}, [tmp_path / "nowhere"]) == PlayerScript("cdn", url=CDN_URL, integrity=CDN_INTEGRITY)
    assert find_player("none", {"KUBEMAM_PLAYER_JS": str(npm)}, [tmp_path]).kind == "none"
    assert find_player(None, {"KUBEMAM_PLAYER_JS": "cdn"}, [tmp_path]).kind == "cdn"
    assert find_player(str(npm), {}, []).path == npm.resolve()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_player(str(tmp_path / "missing.js"), {}, [])
    assert "jsDelivr" in PlayerScript("cdn", url=CDN_URL, integrity=CDN_INTEGRITY).describe()["label"]


@pytest.mark.skipif(not (NPM_COPY / "package.json").is_file(), reason="the browser tests' npm copy is not installed "
                    "(tests/browser: npm ci)")
def test_cdn_integrity_is_the_npm_release_of_the_pinned_version() -> None:
    assert json.loads((NPM_COPY / "package.json").read_text())["version"] == SHAKA_VERSION
    digest = hashlib.sha384((NPM_COPY / "dist" / "shaka-player.compiled.js").read_bytes()).digest()
    assert "sha384-" + base64.b64encode(digest).decode() == CDN_INTEGRITY


def _get(port: int, path: str, host: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Host": host or f"127.0.0.1:{port}"})
    response = conn.getresponse()
    response.read()
    return response


def test_server_answers_only_its_token_on_loopback_and_signs_package_files(tmp_path: Path) -> None:
    import threading

    script = tmp_path / "shaka.js"
    script.write_text("window.shaka = {};")
    # Presigning is local arithmetic: this endpoint is never contacted.
    s3 = preview_client("http://127.0.0.1:9", "AKIDEXAMPLE", "secret")
    server = PreviewServer(0, page, s3, PlayerScript("local", path=script))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port, token = server.port, server.token
        assert server.url == f"http://127.0.0.1:{port}/{token}/" and server.server_address[0] == "127.0.0.1"
        assert _get(port, f"/{token}/").status == 200
        assert _get(port, f"/{token}/", host=f"attacker.example:{port}").status == 403  # DNS rebinding
        wrong = token[:-1] + ("y" if token.endswith("x") else "x")  # one character off, never the token itself
        assert _get(port, "/").status == 404 and _get(port, f"/{wrong}/").status == 404
        assert _get(port, f"/{token}/player.js").status == 200
        for outside in ("pkg/dash/../../ingest/abc/proxy.mp4", "pkg/dash//x.m4s", "pkg/widevine/x.m4s"):
            assert _get(port, f"/{token}/{outside}").status == 404, outside
        segment = _get(port, f"/{token}/pkg/dash/h264-180p/seg-1.m4s")
        assert segment.status == 302
        location = urlsplit(segment.getheader("Location") or "")
        assert location.netloc == "127.0.0.1:9"
        assert location.path == "/kubemam-library/assets/ns/clip/packages/def/h264-180p/seg-1.m4s"
        query = parse_qs(location.query)
        assert query["response-content-type"] == ["video/mp4"] and "X-Amz-Signature" in query
        assert _get(port, f"/{token}/").getheader("Cache-Control") == "no-store"  # the page holds keys
        with pytest.raises(PreviewError, match=f"cannot listen on 127.0.0.1:{port}"):
            PreviewServer(port, page, s3, PlayerScript("none"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
