"""`kubemam worker package` against real MinIO: what players and an independent decoder see.

Decryption is checked with the ffmpeg of the imageio-ffmpeg wheel (a newer ffmpeg than Debian's,
and not the packager: mp4ff encrypts), frame by frame against the clear package.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from kubemam.storage.s3 import list_objects, make_client
from kubemam.storage.uri import S3Uri
from tests.helpers import write_content_keys

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]

BUCKET = "kubemam-library"
WIDEVINE = uuid.UUID("edef8ba9-79d6-4ace-a3c8-27dcd51d21ed")
PLAYREADY = uuid.UUID("9a04f079-9840-4286-ab92-e65be0885f95")
CLEARKEY = uuid.UUID("1077efec-c0b2-4d02-ace3-3c1e52e2fb4b")


def ffmpeg7() -> str:
    import imageio_ffmpeg  # type: ignore[import-untyped]

    return str(imageio_ffmpeg.get_ffmpeg_exe())


@pytest.fixture(scope="module")
def renditions(tmp_path_factory: pytest.TempPathFactory, minio: Any) -> dict[str, str]:
    """Two aligned H.264 rungs (2 s closed GOPs, a timecode track as the transcoder writes) and AAC audio."""
    folder = tmp_path_factory.mktemp("renditions")
    s3 = minio.client()
    prefix = f"assets/pkg-{uuid.uuid4().hex[:8]}/renditions"
    made = {}
    for name, size in (("h264-360p", "640x360"), ("h264-180p", "320x180")):
        path = folder / f"{name}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s={size}:r=25:d=12",
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
                        "-timecode", "10:00:00:00", "-movflags", "+faststart", str(path)], check=True)
        made[name] = path
    audio = folder / "stereo-en.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=f=440:sample_rate=48000:d=12",
                    "-ac", "2", "-c:a", "aac", "-b:a", "96k", str(audio)], check=True)
    made["stereo-en"] = audio
    captions = folder / "en.vtt"
    captions.write_text("WEBVTT\n\n00:00:01.000 --> 00:00:04.000\nHello from kubemam\n\n"
                        "00:00:05.000 --> 00:00:08.000\nSecond cue\n")
    made["captions"] = captions
    for number in (1, 2):
        sheet = folder / f"sprite-{number:03d}.jpg"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=640x360", "-frames:v", "1",
                        str(sheet)], check=True)
        made[f"sheet{number}"] = sheet
    uris = {}
    for name, path in made.items():
        key = f"{prefix}/{path.name}"
        s3.upload_file(str(path), BUCKET, key)
        uris[name] = f"s3://{BUCKET}/{key}"
    return uris


def _inputs(uris: dict[str, str], drm: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    tracks: list[dict[str, Any]] = [
        {"name": "h264-360p", "kind": "video", "uri": uris["h264-360p"], "specHash": "a" * 64},
        {"name": "h264-180p", "kind": "video", "uri": uris["h264-180p"], "specHash": "b" * 64},
        {"name": "stereo-en", "kind": "audio", "uri": uris["stereo-en"], "specHash": "c" * 64, "language": "en"},
    ]
    if drm is not None:
        for track in tracks:
            track["keyTier"] = "audio" if track["kind"] == "audio" else "video"
    inputs: dict[str, Any] = {
        "contentId": str(uuid.uuid4()), "formats": ["dash", "hls"], "iframePlaylist": True, "segmentSeconds": 2,
        "tracks": tracks, "output": f"s3://{BUCKET}/assets/pkg/{uuid.uuid4().hex[:12]}",
        "captions": [{"language": "en", "kind": "subtitles", "format": "webvtt", "uri": uris["captions"],
                      "label": "English"}],
        "thumbnails": {"sheets": [uris["sheet1"], uris["sheet2"]], "columns": 2, "rows": 2, "intervalSeconds": 2},
    }
    if drm is not None:
        inputs["drm"] = drm
    return inputs | extra


def _run(minio: Any, tmp_path: Path, inputs: dict[str, Any], env_extra: dict[str, str] | None = None,
         expect: int = 0) -> tuple[dict[str, Any], str]:
    message = tmp_path / f"termination-{uuid.uuid4().hex}"
    scratch = tmp_path / f"scratch-{uuid.uuid4().hex[:6]}"
    scratch.mkdir()
    env = {**os.environ, "AWS_ENDPOINT_URL": minio.endpoint, "AWS_ACCESS_KEY_ID": minio.access_key,
           "AWS_SECRET_ACCESS_KEY": minio.secret_key, "KUBEMAM_STEP_INPUT": json.dumps(inputs),
           "KUBEMAM_TERMINATION_MESSAGE_PATH": str(message), "TMPDIR": str(scratch),
           "KUBEMAM_S3_RETRY_SECONDS": "5", **(env_extra or {})}
    result = subprocess.run([sys.executable, "-m", "kubemam", "worker", "package"], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == expect, result.stderr[-3000:]
    body = json.loads(message.read_text()) if message.exists() else {}
    return dict(body), result.stdout + result.stderr


def _download(minio: Any, output: str, target: Path) -> Path:
    s3 = minio.client()
    prefix = S3Uri.parse(output)
    for key, _ in list_objects(s3, prefix):
        path = target / key
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(prefix.bucket, prefix.join(key).key, str(path))
    return target


def _track_file(package: Path, track: str, target: Path) -> Path:
    """init + every segment, in order: the track as one fragmented MP4."""
    segments = sorted((package / track).glob("seg-*.m4s"))
    target.write_bytes((package / track / "init.mp4").read_bytes() + b"".join(p.read_bytes() for p in segments))
    return target


def _framemd5(path: Path, key: str | None = None) -> list[str]:
    args = [ffmpeg7(), "-v", "error"] + (["-decryption_key", key] if key else []) + [
        "-i", str(path), "-map", "0:v:0", "-f", "framemd5", "-"]
    result = subprocess.run(args, capture_output=True, text=True)
    return [line.rsplit(",", 1)[-1].strip() for line in result.stdout.splitlines() if not line.startswith("#")]


def _pssh_boxes(init: bytes) -> list[tuple[uuid.UUID, list[uuid.UUID], bytes]]:
    """Independent of the packager: walk moov for 'pssh' full boxes (ISO/IEC 23001-7 8.1)."""
    found = []
    pos = 0
    while pos < len(init):
        size, kind = struct.unpack_from(">I4s", init, pos)
        if kind == b"moov":
            inner = pos + 8
            while inner < pos + size:
                child_size, child = struct.unpack_from(">I4s", init, inner)
                if child == b"pssh":
                    version = init[inner + 8]
                    system = uuid.UUID(bytes=init[inner + 12:inner + 28])
                    cursor = inner + 28
                    kids = []
                    if version > 0:
                        (count,) = struct.unpack_from(">I", init, cursor)
                        kids = [uuid.UUID(bytes=init[cursor + 4 + 16 * i:cursor + 20 + 16 * i]) for i in range(count)]
                        cursor += 4 + 16 * count
                    (data_size,) = struct.unpack_from(">I", init, cursor)
                    found.append((system, kids, init[cursor + 4:cursor + 4 + data_size]))
                inner += child_size
        pos += size
    return found


def _ffprobe_streams(path: Path) -> list[dict[str, Any]]:
    # ffmpeg's DASH demuxer refuses sidecar .vtt unless told it may open any extension.
    out = subprocess.run(["ffprobe", "-v", "error", "-allowed_extensions", "ALL", "-print_format", "json",
                          "-show_streams", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return list(json.loads(out)["streams"])


def test_clear_package_is_valid_dash_and_hls(minio: Any, renditions: dict[str, str], tmp_path: Path) -> None:
    inputs = _inputs(renditions)
    result, _ = _run(minio, tmp_path, inputs)
    assert [p["format"] for p in result["packages"]] == ["dash", "hls"]
    package = _download(minio, inputs["output"], tmp_path / "clear")
    for track in ("h264-360p", "h264-180p", "stereo-en"):
        assert len(list((package / track).glob("seg-*.m4s"))) == 6, track  # 12 s in 2 s segments
    assert (package / "subs-en-subtitles" / "subtitles.vtt").read_text().startswith("WEBVTT")
    assert (package / "thumbnails" / "sprite-002.jpg").exists()

    # A demuxer that knows DASH and HLS reads both manifests: two video streams and the audio.
    dash = _ffprobe_streams(package / "manifest.mpd")
    assert sorted((s["codec_type"], s.get("height")) for s in dash) == [
        ("audio", None), ("subtitle", None), ("video", 180), ("video", 360)]
    hls = _ffprobe_streams(package / "master.m3u8")
    assert {s.get("height") for s in hls if s["codec_type"] == "video"} == {180, 360}
    assert any(s["codec_type"] == "audio" for s in hls)

    # Same segment boundaries in every video track; the MPD's timeline says 12 s.
    mpd = (package / "manifest.mpd").read_text()
    assert 'mediaPresentationDuration="PT12.0' in mpd and "thumbnail_tile" in mpd and "text/vtt" in mpd
    assert mpd.count('<S t="0" d="25600" r="5" />') == 2  # both video tracks: six 2 s segments from 0
    master = (package / "master.m3u8").read_text()
    assert "#EXT-X-I-FRAME-STREAM-INF" in master and 'SUBTITLES="subs"' in master and "ContentProtection" not in mpd

    # An I-frame playlist entry is a byte range holding exactly one decodable key frame.
    lines = (package / "h264-360p" / "iframes.m3u8").read_text().splitlines()
    length = int(next(line for line in lines if line.startswith("#EXT-X-BYTERANGE:")).split(":")[1].split("@")[0])
    first = tmp_path / "iframe.mp4"
    first.write_bytes((package / "h264-360p" / "init.mp4").read_bytes()
                      + (package / "h264-360p" / "seg-00001.m4s").read_bytes()[:length])
    frames = _framemd5(first)
    assert len(frames) == 1

    # Running the step again changes nothing: the committed package is found and reported — also as another
    # attempt (the planner's retry or recover run: a new Job name, the same work hash and output).
    again, _ = _run(minio, tmp_path, inputs)
    assert again["packages"] == result["packages"]
    recovered, _ = _run(minio, tmp_path, {**inputs, "attempt": {"number": 2, "recover": True}})
    assert recovered["packages"] == result["packages"] and recovered["tracks"] == result["tracks"]


def test_drm_package_decrypts_with_the_right_key_only(minio: Any, renditions: dict[str, str],
                                                      tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys = write_content_keys(keys_dir)
    drm = {"systems": ["clearkey", "playready", "widevine"], "scheme": "cenc", "tiers": ["audio", "video"],
           "provider": "secret"}
    clear_inputs = _inputs(renditions)
    _run(minio, tmp_path, clear_inputs)
    clear = _download(minio, clear_inputs["output"], tmp_path / "clear")
    inputs = _inputs(renditions, drm)
    result, logs = _run(minio, tmp_path, inputs, {"KUBEMAM_KEYS_DIR": str(keys_dir)})
    package = _download(minio, inputs["output"], tmp_path / "drm")

    video_kid, video_key = keys["video"]
    assert result["packages"][0]["keyIds"] == sorted(str(k) for k, _ in keys.values())
    assert {t["name"]: t["keyId"] for t in result["tracks"]}["stereo-en"] == str(keys["audio"][0])
    # (b) frames identical to the clear encode with the right key; garbage with a wrong one.
    for track in ("h264-360p", "h264-180p"):
        reference = _framemd5(_track_file(clear, track, tmp_path / f"{track}-clear.mp4"))
        encrypted = _track_file(package, track, tmp_path / f"{track}-enc.mp4")
        assert len(reference) == 300
        assert _framemd5(encrypted, video_key.hex()) == reference
        wrong = _framemd5(encrypted, os.urandom(16).hex())
        assert sum(a == b for a, b in zip(wrong, reference, strict=False)) < 10
        assert _framemd5(encrypted) != reference  # no key: nothing decodes to the picture

    # (c) pssh boxes that parse as Widevine, PlayReady and ClearKey and carry the track's KID.
    boxes = _pssh_boxes((package / "h264-360p" / "init.mp4").read_bytes())
    systems = {system: (kids, data) for system, kids, data in boxes}
    assert set(systems) == {WIDEVINE, PLAYREADY, CLEARKEY}
    assert systems[CLEARKEY][0] == [video_kid]
    assert video_kid.bytes in systems[WIDEVINE][1]  # WidevinePsshData.key_ids
    little_endian = base64.b64encode(video_kid.bytes_le).decode()
    assert little_endian in systems[PLAYREADY][1].decode("utf-16-le", errors="ignore")

    mpd = (package / "manifest.mpd").read_text()
    assert f'cenc:default_KID="{video_kid}"' in mpd and "urn:uuid:9a04f079-9840-4286-ab92-e65be0885f95" in mpd
    playlist = (package / "h264-360p" / "media.m3u8").read_text()
    assert "#EXT-X-KEY:METHOD=SAMPLE-AES-CTR" in playlist
    assert "#EXT-X-SESSION-KEY" in (package / "master.m3u8").read_text()

    # Keys never appear in what was published, the step's result or its logs.
    for _, key in keys.values():
        secrets_seen = {key.hex(), key.hex().upper(), base64.b64encode(key).decode()}
        for path in package.rglob("*"):
            if path.suffix in (".mpd", ".m3u8", ".json"):
                assert not any(s in path.read_text() for s in secrets_seen), path
        assert not any(s in json.dumps(result) + logs for s in secrets_seen)


def test_cpix_keys_and_refusals(minio: Any, renditions: dict[str, str], tmp_path: Path) -> None:
    from tests.cpix_server import CpixKeyServer

    with CpixKeyServer() as server:
        kid = uuid.uuid4()
        drm = {"systems": ["widevine", "clearkey"], "scheme": "cenc", "tiers": ["all"], "provider": "cpix",
               "url": server.url, "kids": {"all": str(kid)}}
        inputs = _inputs(renditions, drm)
        for track in inputs["tracks"]:
            track["keyTier"] = "all"
        result, _ = _run(minio, tmp_path, inputs)
        assert result["packages"][0]["keyIds"] == [str(kid)]
        key = server.keys_for(inputs["contentId"])[kid]
        package = _download(minio, inputs["output"], tmp_path / "cpix")
        encrypted = _track_file(package, "h264-180p", tmp_path / "cpix-180p.mp4")
        assert len(_framemd5(encrypted, key.hex())) == 300

        # A key server that refuses: a permanent failure, and nothing is published.
        server.mode = "forbidden"
        refused = _inputs(renditions, drm | {"kids": {"all": str(uuid.uuid4())}})
        for track in refused["tracks"]:
            track["keyTier"] = "all"
        body, _ = _run(minio, tmp_path, refused, expect=2)
        assert "403" in body["error"] and "key provider" in body["error"]
        assert list(list_objects(make_client(minio.endpoint, minio.access_key, minio.secret_key),
                                 S3Uri.parse(refused["output"]))) == []


def _played(result: dict[str, Any], screenshot: Path) -> None:
    assert result["ok"] and result["exitCode"] == 0 and not result["errors"], result
    assert result["currentTime"] > 5.0, result
    assert screenshot.stat().st_size > 10_000  # a real frame; a black one is ~1.4 kB of PNG


def test_packages_play_in_a_browser(minio: Any, renditions: dict[str, str], tmp_path: Path) -> None:
    """Headless Chromium with Shaka Player: the clear DASH and HLS packages and the ClearKey DASH
    package play past 5 s; with a wrong key the protected one does not."""
    from tests.browser_player import ensure_browser_deps, play, serve_directory

    ensure_browser_deps()
    clear_inputs = _inputs(renditions)
    _run(minio, tmp_path, clear_inputs)
    clear = _download(minio, clear_inputs["output"], tmp_path / "clear")
    with serve_directory(clear) as base:
        for manifest in ("manifest.mpd", "master.m3u8"):
            shot = tmp_path / f"{manifest}.png"
            _played(play(f"{base}/{manifest}", screenshot=shot), shot)

    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    kid, key = uuid.uuid4(), os.urandom(16)
    (keys_dir / "all.kid").write_text(str(kid))
    (keys_dir / "all.key").write_text(key.hex())
    inputs = _inputs(renditions, {"systems": ["clearkey"], "scheme": "cenc", "tiers": ["all"], "provider": "secret"})
    for track in inputs["tracks"]:
        track["keyTier"] = "all"
    _run(minio, tmp_path, inputs, {"KUBEMAM_KEYS_DIR": str(keys_dir)})
    protected = _download(minio, inputs["output"], tmp_path / "protected")
    with serve_directory(protected) as base:
        shot = tmp_path / "clearkey.png"
        _played(play(f"{base}/manifest.mpd", clearkeys={kid.hex: key.hex()}, screenshot=shot), shot)
        wrong = play(f"{base}/manifest.mpd", clearkeys={kid.hex: os.urandom(16).hex()}, timeout=30)
        assert not wrong["ok"] and wrong["currentTime"] < 1.0, wrong


def test_cbcs_package_for_fairplay_and_widevine(minio: Any, renditions: dict[str, str], tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    kid, key = uuid.uuid4(), os.urandom(16)
    (keys_dir / "all.kid").write_text(str(kid))
    (keys_dir / "all.key").write_text(key.hex())
    inputs = _inputs(renditions, {"systems": ["fairplay", "widevine"], "scheme": "cbcs", "tiers": ["all"],
                                  "provider": "secret"})
    for track in inputs["tracks"]:
        track["keyTier"] = "all"
    result, _ = _run(minio, tmp_path, inputs, {"KUBEMAM_KEYS_DIR": str(keys_dir)})
    assert result["packages"][1] | {"manifestUri": ""} == {
        "format": "hls", "manifestUri": "", "drmSystems": ["fairplay", "widevine"], "scheme": "cbcs",
        "keyIds": [str(kid)]}
    package = _download(minio, inputs["output"], tmp_path / "cbcs")
    source = tmp_path / "rendition.mp4"
    where = S3Uri.parse(renditions["h264-180p"])
    minio.client().download_file(where.bucket, where.key, str(source))
    encrypted = _track_file(package, "h264-180p", tmp_path / "cbcs-180p.mp4")
    assert _framemd5(encrypted, key.hex()) == _framemd5(source)
    playlist = (package / "h264-180p" / "media.m3u8").read_text()
    assert f'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://{kid.hex}"' in playlist
    assert 'KEYFORMAT="com.apple.streamingkeydelivery"' in playlist
    assert 'value="cbcs"' in (package / "manifest.mpd").read_text()
    (widevine,) = [data for system, _, data in _pssh_boxes((package / "h264-180p" / "init.mp4").read_bytes())
                   if system == WIDEVINE]
    fourcc, varint = int.from_bytes(b"cbcs", "big"), b""
    while fourcc > 0x7F:
        varint, fourcc = varint + bytes([fourcc & 0x7F | 0x80]), fourcc >> 7
    varint += bytes([fourcc])
    # WidevinePsshData: key_ids (field 2) holds the KID; protection_scheme (field 9, varint) is 'cbcs'.
    assert b"\x12\x10" + kid.bytes in widevine and b"\x48" + varint in widevine
