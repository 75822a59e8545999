"""`kubemam worker package`: the asset's renditions as CMAF segments behind a DASH MPD and HLS
playlists, encrypted (CENC cenc or cbcs) when the ladder names DRM systems.

Order matters for "nothing published on failure": keys come first (a refused key provider fails
the step before a byte is written), then every file is built locally, then everything is
committed under the content-addressed package prefix with its manifest written last.
Memory does not grow with the programme: tracks stay on disk, the remux is ffmpeg over files,
kubemam-encrypt holds one fragment at a time, the splitter streams (media/cmaf.py) and uploads go
from disk in parts.

Encryption is mp4ff's (github.com/Eyevinn/mp4ff), through kubemam-encrypt, our small program over
its library: one call per track over the whole fragmented file, so the CTR counter runs on across
segments and never repeats, with the key, KID and IV on its stdin (never argv, which every process on
the node can read in /proc). The worker finds kubemam-encrypt by configuration only —
KUBEMAM_ENCRYPT, else PATH: the worker image carries it; the local cluster (kubemam-local) builds it
and puts it on its process node's PATH.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ffmpeg

from kubemam import __version__
from kubemam.drm.errors import KeyProviderError
from kubemam.drm.keys import ContentKey
from kubemam.drm.provider import ProvidedKeys, provide_keys
from kubemam.drm.pssh import build_pssh, playready_object
from kubemam.media.cmaf import CmafError, Track, copy_range, fragment_command, scan_track
from kubemam.media.probe import probe
from kubemam.media.progress import progress_line
from kubemam.packaging.dash import build_mpd
from kubemam.packaging.hls import iframe_playlist, media_playlist, multivariant_playlist, subtitle_playlist
from kubemam.packaging.layout import (
    IFRAME_PLAYLIST,
    INIT_NAME,
    MASTER_NAME,
    MEDIA_PLAYLIST,
    MPD_NAME,
    MediaTrack,
    Package,
    Protection,
    SegmentInfo,
    SubtitleTrack,
    ThumbnailTrack,
)
from kubemam.redact import redact_url
from kubemam.storage.s3 import commit, make_client, read_committed, wait_until_reachable
from kubemam.storage.uri import S3Uri
from kubemam.worker.contract import StepError, digest, step_input, work_dir, write_result
from kubemam.worker.source import fetch

log = logging.getLogger("kubemam.worker.package")

S3_RETRY_SECONDS = float(os.environ.get("KUBEMAM_S3_RETRY_SECONDS") or 60)
ENCRYPTOR_ENV = "KUBEMAM_ENCRYPT"  # a path; the worker image sets it
ENCRYPTOR = "kubemam-encrypt"


def _encryptor() -> str:
    """kubemam-encrypt: KUBEMAM_ENCRYPT (a path), else the first on PATH; never built here."""
    explicit = os.environ.get(ENCRYPTOR_ENV)
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise StepError(f"{ENCRYPTOR_ENV}={explicit} is not an executable file")
        return explicit
    on_path = shutil.which(ENCRYPTOR)
    if on_path:
        return on_path
    raise StepError(f"DRM packaging needs {ENCRYPTOR} (over github.com/Eyevinn/mp4ff v0.56.0): set {ENCRYPTOR_ENV} "
                    f"to its path or put it on PATH (the worker image carries it)")


def _encrypt(source: Path, target: Path, key: ContentKey, scheme: str, pssh: bytes, scratch: Path) -> None:
    """One kubemam-encrypt call over a whole track file. The key, KID and IV go in on its stdin, so
    they are on no command line (/proc/<pid>/cmdline, exec audit logs) and in no file; its stderr is
    redacted all the same."""
    pssh_file = scratch / f"{target.stem}.pssh"
    pssh_file.write_bytes(pssh)
    # cenc: a random 64-bit IV start per track; cbcs: one constant 128-bit IV per track.
    iv = secrets.token_hex(8 if scheme == "cenc" else 16)
    params = json.dumps({"kid": key.kid.hex, "key": key.key.hex(), "iv": iv})
    command = [_encryptor(), "-scheme", scheme, "-pssh", str(pssh_file), "-params", "-", str(source), str(target)]
    result = subprocess.run(command, input=params, capture_output=True, text=True)
    if result.returncode != 0:
        message = result.stderr
        for form in (key.key.hex(), key.key.hex().upper(), base64.b64encode(key.key).decode()):
            message = message.replace(form, "<key>")
        message = message.strip()[-500:]
        raise RuntimeError(f"encrypting {source.name} failed: {message}")


def _segments(fragmented: Path, name: str, folder: Path) -> tuple[Track, list[SegmentInfo]]:
    """Split a fragmented track file into init.mp4 and seg-NNNNN.m4s, streamed: one pass reads box
    headers and each moof, the next copies each segment's bytes a bounded chunk at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(fragmented, "rb") as stream:
        try:
            track = scan_track(stream, fragmented.stat().st_size)
        except CmafError as err:
            raise RuntimeError(f"rendition {name}: {err}") from err
        copy_range(stream, folder / INIT_NAME, 0, track.init_end)
        infos = []
        for segment in track.segments:
            info = SegmentInfo(segment.decode_time, segment.duration, segment.end - segment.start,
                               segment.first_sample_end)
            copy_range(stream, folder / info.uri(segment.number), segment.start, segment.end)
            infos.append(info)
    return track, infos


def _media_track(spec: dict[str, Any], source: Path, out: Path, scratch: Path, segment_seconds: int,
                 keys: ProvidedKeys | None, protection: Protection | None) -> MediaTrack:
    name, kind = spec["name"], spec["kind"]
    info = probe(source, require_video=kind == "video")
    stream = next((s for s in info["streams"] if s.get("codec_type") == kind), None)
    if stream is None:
        raise StepError(f"rendition {name} has no {kind} stream")
    fragmented = scratch / f"{name}.frag.mp4"
    result = subprocess.run(fragment_command(source, fragmented, kind, segment_seconds), capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise RuntimeError(f"fragmenting {name} failed: {result.stderr.strip()[-500:]}")
    tier = spec.get("keyTier")
    key = keys.keys.get(tier) if keys is not None and tier else None
    if protection is not None:
        if key is None:
            raise StepError(f"no key for tier {tier!r} of rendition {name}")
        encrypted = scratch / f"{name}.enc.mp4"
        pssh = b"".join(protection.pssh.get(tier, {}).values()) if tier else b""
        _encrypt(fragmented, encrypted, key, protection.scheme, pssh, scratch)
        fragmented.unlink()
        fragmented = encrypted
    track, segments = _segments(fragmented, name, out / name)
    fragmented.unlink()
    return MediaTrack(
        name=name, kind=kind, codecs=track.codecs, timescale=track.timescale, segments=segments,
        key_tier=tier if key else None, key_id=key.kid if key else None,
        width=stream.get("width"), height=stream.get("height"),
        frame_rate=stream.get("r_frame_rate") if kind == "video" else None,
        language=spec.get("language"), channels=stream.get("channels"),
        sample_rate=int(stream["sample_rate"]) if stream.get("sample_rate") else None)


def _subtitle(spec: dict[str, Any], s3: Any, out: Path, scratch: Path, duration: float) -> SubtitleTrack:
    track = SubtitleTrack(spec["language"], spec.get("kind", "subtitles"), spec.get("label"), duration)
    if spec.get("format") == "ttml":
        raise StepError(f"caption {track.folder}: TTML is not converted to WebVTT yet; give WebVTT or SRT")
    raw = scratch / f"{track.folder}.{spec.get('format', 'webvtt')}"
    fetch(spec["uri"], raw, s3)
    folder = out / track.folder
    folder.mkdir(parents=True, exist_ok=True)
    command = (ffmpeg.input(str(raw)).output(str(folder / "subtitles.vtt"), f="webvtt")
               .global_args("-hide_banner", "-nostdin", "-loglevel", "error").overwrite_output().compile())
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise StepError(f"caption {redact_url(spec['uri'])} is not readable {spec.get('format')}: "
                        f"{result.stderr.strip()[-300:]}")
    (folder / MEDIA_PLAYLIST).write_text(subtitle_playlist(track))
    return track


def _thumbnails(spec: dict[str, Any], s3: Any, out: Path) -> ThumbnailTrack | None:
    sheets = spec.get("sheets") or []
    if not sheets:
        return None
    folder = out / "thumbnails"
    folder.mkdir(parents=True, exist_ok=True)
    for number, uri in enumerate(sheets, start=1):
        fetch(uri, folder / f"sprite-{number:03d}.jpg", s3)
    first = probe(folder / "sprite-001.jpg", require_video=True)["streams"][0]
    return ThumbnailTrack(len(sheets), int(spec["columns"]), int(spec["rows"]), int(spec["intervalSeconds"]),
                          int(first["width"]), int(first["height"]))


def _protection(drm: dict[str, Any] | None, keys: ProvidedKeys | None, content_id: str) -> Protection | None:
    if drm is None or keys is None:
        return None
    systems, scheme = list(drm["systems"]), drm["scheme"]
    pssh: dict[str, dict[str, bytes]] = {}
    pro: dict[str, bytes] = {}
    for tier, key in keys.keys.items():
        built = build_pssh(systems, [key], content_id.encode(), scheme)
        # What the key provider signalled wins over what we would build.
        pssh[tier] = {**built, **keys.pssh.get(tier, {})}
        if "playready" in systems:
            pro[tier] = playready_object([key.kid], scheme)
    return Protection(systems, scheme, pssh, pro)


def _result(inputs: dict[str, Any], package: Package) -> dict[str, Any]:
    output = S3Uri.parse(inputs["output"])
    protection = package.protection
    key_ids = sorted({str(t.key_id) for t in package.tracks if t.key_id})
    packages = []
    for fmt in inputs["formats"]:
        entry: dict[str, Any] = {"format": fmt, "manifestUri": str(output.join(MPD_NAME if fmt == "dash"
                                                                               else MASTER_NAME))}
        if protection is not None:
            entry |= {"drmSystems": protection.systems, "scheme": protection.scheme, "keyIds": key_ids}
        packages.append(entry)
    tracks = [{"name": t.name, "kind": t.kind, **({"keyId": str(t.key_id)} if t.key_id else {})}
              for t in package.tracks]
    return {"packages": packages, "tracks": tracks, "durationSeconds": round(package.duration_seconds, 3)}


def _done(s3: Any, output: S3Uri, input_hash: str) -> dict[str, Any] | None:
    manifest = read_committed(s3, output, input_hash)
    return {**manifest.result, "manifestUri": str(output.join("manifest.json"))} if manifest else None


def package(s3: Any, inputs: dict[str, Any], scratch: Path) -> dict[str, Any]:
    output = S3Uri.parse(inputs["output"])
    input_hash = digest(inputs)
    done = _done(s3, output, input_hash)
    if done is not None:
        log.info("package already committed at %s", output)
        return done
    drm = inputs.get("drm")
    content_id = inputs["contentId"]
    try:
        keys = provide_keys(drm, content_id) if drm else None
        protection = _protection(drm, keys, content_id)
    except KeyProviderError as err:
        if err.transient:
            raise RuntimeError(f"key provider: {err.message}") from err  # the Job retries the pod
        raise StepError(f"key provider: {err.message}") from err
    if protection is not None:
        _encryptor()  # no encryptor is a StepError now, before any track is fetched
    out = scratch / "package"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    segment_seconds = int(inputs["segmentSeconds"])
    tracks_in = list(inputs["tracks"])

    def one(spec: dict[str, Any]) -> MediaTrack:
        source = scratch / f"{spec['name']}.src.mp4"
        fetch(spec["uri"], source, s3)
        track = _media_track(spec, source, out, scratch, segment_seconds, keys, protection)
        source.unlink()
        return track

    with ThreadPoolExecutor(max_workers=2) as pool:  # remux and encrypt are I/O-bound; two at a time
        tracks = list(pool.map(one, tracks_in))
    print(progress_line("package", 70), flush=True)
    duration = max(t.duration_seconds for t in tracks)
    subtitles = [_subtitle(c, s3, out, scratch, duration) for c in inputs.get("captions") or []]
    thumbnails = _thumbnails(inputs["thumbnails"], s3, out) if inputs.get("thumbnails") else None
    pkg = Package(tracks, segment_seconds, subtitles, thumbnails, protection, bool(inputs.get("iframePlaylist", True)))
    if "dash" in inputs["formats"]:
        (out / MPD_NAME).write_bytes(build_mpd(pkg))
    if "hls" in inputs["formats"]:
        for track in tracks:
            (out / track.name / MEDIA_PLAYLIST).write_text(media_playlist(pkg, track))
            if track.kind == "video" and pkg.iframe_playlists:
                (out / track.name / IFRAME_PLAYLIST).write_text(iframe_playlist(pkg, track))
        (out / MASTER_NAME).write_text(multivariant_playlist(pkg))
    result = _result(inputs, pkg)
    commit(s3, out, output, step="package", input_hash=input_hash, worker_version=__version__,
           now=datetime.now(UTC), result=result, content_addressed=True)
    shutil.rmtree(out, ignore_errors=True)
    print(progress_line("package", 100), flush=True)
    return {**result, "manifestUri": str(output.join("manifest.json"))}


def run() -> int:
    inputs = step_input()
    for key in ("output", "contentId", "tracks", "formats", "segmentSeconds"):
        if key not in inputs:
            raise StepError(f"package input needs {key}")
    if not inputs["tracks"]:
        raise StepError("package input names no track")
    s3 = make_client()
    wait_until_reachable(s3, S3Uri.parse(inputs["output"]).bucket, S3_RETRY_SECONDS)
    write_result(package(s3, inputs, work_dir()), shrink=compact_result)
    return 0


def compact_result(result: dict[str, Any], limit: int) -> dict[str, Any]:
    """A result too big for the termination message (many tracks, long names): the per-track list is
    dropped (the manifest at resultUri keeps it); the packages, which the planner needs, stay."""
    packages = [{k: v for k, v in p.items() if k != "keyIds"} for p in result.get("packages") or []]
    small = {**result, "tracks": [], "resultUri": result.get("manifestUri")}
    if len(json.dumps(small, separators=(",", ":"), sort_keys=True).encode()) <= limit:
        return small
    return {**small, "packages": packages}  # key IDs too: the manifests carry them
