"""Transcode benchmark: ratios measured in one run on the same generated 1080p master and 4-rung H.264 ladder.

  (a) `kubemam worker transcode` (fetch from MinIO, encode, probe, commit) over a hand-written single
      ffmpeg command doing the same ladder                                           goal <= 1.03
  (b) one decode feeding every rung over one ffmpeg process per rung, run one after another
                                                                                     goal clearly < 1
  (c) chunked (an index per chunk, 2 workers at once, then the stitch) over the single-pass worker,
      with the bitrate, SSIM and PSNR of the chunked 1080p rung against the single-pass one.

Usage: .venv/bin/python bench/transcode.py [--seconds 20] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.media.probe import probe, technical_metadata
from kubemam.media.sample import make_sample
from kubemam.plan.transcode import chunking, fit_ladder, master_facts, transcode_inputs
from kubemam.storage.manifest import sha256_file
from kubemam.storage.s3 import make_client
from kubemam.storage.uri import S3Uri
from kubemam_local.minio import MinioServer

RUNGS = [(1920, 1080, 5000), (1280, 720, 3000), (960, 540, 1600), (640, 360, 800)]
LADDER = TranscodeLadderSpec.model_validate({
    "segmentDurationSeconds": 2,
    "renditions": [{"name": f"h264-{h}p", "codec": "h264", "width": w, "height": h, "profile": "high",
                    "preset": "veryfast", "rateControl": {"mode": "vbr", "bitrateKbps": kbps,
                                                          "maxrateKbps": kbps * 3 // 2, "bufsizeKbps": kbps * 2}}
                   for w, h, kbps in RUNGS],
    "chunking": {"chunkSeconds": 6, "maxParallel": 2},
})
X264 = ["-preset", "veryfast", "-profile:v", "high", "-pix_fmt", "yuv420p", "-g", "50", "-keyint_min", "50",
        "-sc_threshold", "0", "-force_key_frames", "expr:eq(mod(n,50),0)", "-movflags", "+faststart"]


def _rate(kbps: int) -> list[str]:
    return ["-b:v", f"{kbps}k", "-maxrate", f"{kbps * 3 // 2}k", "-bufsize", f"{kbps * 2}k"]


def hand_written(master: Path, out: Path) -> list[str]:
    """What an engineer would type: one decode, split four ways, four x264 encodes."""
    graph = "[0:v:0]split=4[a][b][c][d];" + ";".join(
        f"[{tag}]scale={w}:{h}:flags=lanczos[o{tag}]" for tag, (w, h, _) in zip("abcd", RUNGS, strict=True))
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(master), "-filter_complex", graph]
    for tag, (_, h, kbps) in zip("abcd", RUNGS, strict=True):
        command += ["-map", f"[o{tag}]", "-c:v", "libx264", *_rate(kbps), *X264, str(out / f"{h}p.mp4")]
    return command


def per_rendition(master: Path, out: Path) -> list[list[str]]:
    """One process per rung, each decoding the whole master again."""
    return [["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(master), "-map", "0:v:0", "-vf",
             f"scale={w}:{h}:flags=lanczos", "-c:v", "libx264", *_rate(kbps), *X264, str(out / f"{h}p-alone.mp4")]
            for w, h, kbps in RUNGS]


def timed(commands: list[list[str]]) -> float:
    start = time.perf_counter()
    for command in commands:
        subprocess.run(command, check=True)
    return time.perf_counter() - start


class Worker:
    def __init__(self, minio: MinioServer, scratch: Path) -> None:
        self.minio = minio
        self.scratch = scratch

    def start(self, inputs: dict[str, Any], index: int | None = None) -> subprocess.Popen[str]:
        work = self.scratch / uuid.uuid4().hex
        work.mkdir(parents=True)
        env = {**os.environ, "AWS_ENDPOINT_URL": self.minio.endpoint, "AWS_ACCESS_KEY_ID": self.minio.access_key,
               "AWS_SECRET_ACCESS_KEY": self.minio.secret_key, "KUBEMAM_STEP_INPUT": json.dumps(inputs),
               "KUBEMAM_TERMINATION_MESSAGE_PATH": str(work / "result"), "TMPDIR": str(work)}
        if index is not None:
            env["JOB_COMPLETION_INDEX"] = str(index)
        return subprocess.Popen([sys.executable, "-m", "kubemam", "worker", "transcode"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def run(self, inputs: dict[str, Any]) -> float:
        start = time.perf_counter()
        proc = self.start(inputs)
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(err[-2000:])
        return time.perf_counter() - start


def compare(a: Path, b: Path) -> tuple[float, float]:
    """(SSIM, PSNR) of a against b over every frame."""
    out = subprocess.run(["ffmpeg", "-hide_banner", "-i", str(a), "-i", str(b), "-lavfi",
                          "[0:v][1:v]ssim;[0:v][1:v]psnr", "-f", "null", "-"], capture_output=True, text=True).stderr
    ssim = float(out.split("SSIM ")[1].split("All:")[1].split()[0])
    psnr = float(out.split("PSNR ")[1].split("average:")[1].split()[0])
    return ssim, psnr


def bitrate(path: Path) -> float:
    info = probe(path)
    return path.stat().st_size * 8 / float(info["format"]["duration"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=2, help="interleaved runs of (a) and (b); best of each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubemam-bench-") as tmp, MinioServer(buckets=["bench"]) as minio:
        work = Path(tmp)
        print(f"generating a {args.seconds} s 1080p25 master ...", flush=True)
        master = make_sample(work / "master.mov", seconds=args.seconds)
        sha, _ = sha256_file(master)
        technical = technical_metadata(probe(master), sha)
        s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
        s3.upload_file(str(master), "bench", "master.mov")
        source = "s3://bench/master.mov"
        worker = Worker(minio, work / "scratch")

        def fresh_targets() -> list[Any]:
            return fit_ladder(LADDER, technical, f"s3://bench/{uuid.uuid4().hex}").targets

        out = work / "out"
        out.mkdir()
        # Interleaved repeats, best of each: on a shared 2-core machine a run varies by more than
        # the worker's own overhead, and the minimum is the run least disturbed by neighbours.
        hands, singles, separates = [], [], []
        for _ in range(args.repeat):
            hands.append(timed([hand_written(master, out)]))
            single_inputs = transcode_inputs(source, technical, LADDER, fresh_targets(), "single")
            singles.append(worker.run(single_inputs))
            separates.append(timed(per_rendition(master, out)))
        hand, single, separate = min(hands), min(singles), min(separates)
        one_decode = hand  # the hand-written command is the one-decode, four-output encode

        plan = chunking(LADDER, master_facts(technical))
        assert plan is not None
        targets = fresh_targets()
        chunk_root = f"s3://bench/{uuid.uuid4().hex}/chunks"
        chunk_inputs = transcode_inputs(source, technical, LADDER, targets, "chunk", chunk_root, plan)
        start = time.perf_counter()
        pending = list(range(plan.count))
        running: list[subprocess.Popen[str]] = []
        while pending or running:
            while pending and len(running) < 2:
                running.append(worker.start(chunk_inputs, pending.pop(0)))
            time.sleep(0.05)
            for proc in [p for p in running if p.poll() is not None]:
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr.read() if proc.stderr else "chunk failed")
                running.remove(proc)
        stitch_inputs = transcode_inputs(source, technical, LADDER, targets, "stitch", chunk_root, plan)
        worker.run(stitch_inputs)
        chunked = time.perf_counter() - start

        top = next(t for t in targets if t.name == "h264-1080p")
        single_top = next(v for v in single_inputs["video"] if v["name"] == "h264-1080p")
        a, b = work / "chunked.mp4", work / "single.mp4"
        for uri, path in ((f"{top.output}/h264-1080p.mp4", a), (f"{single_top['output']}/h264-1080p.mp4", b)):
            where = S3Uri.parse(uri)
            s3.download_file(where.bucket, where.key, str(path))
        ssim, psnr = compare(a, b)
        ssim_src, _ = compare(a, master)
        ssim_src_single, _ = compare(b, master)

        print(f"\nmaster: {args.seconds} s 1920x1080 25 fps; ladder: 4 H.264 rungs (veryfast, capped VBR); "
              f"{os.cpu_count()} CPUs")
        def runs(values: list[float]) -> str:
            return ", ".join(f"{v:.2f}" for v in values)

        print(f"hand-written single command      {hand:7.2f} s  (runs: {runs(hands)})")
        print(f"kubemam worker (S3 in and out)   {single:7.2f} s  (runs: {runs(singles)})")
        print(f"one process per rendition        {separate:7.2f} s  (runs: {runs(separates)})")
        print(f"chunked, {plan.count} chunks, 2 at a time    {chunked:7.2f} s (incl. stitch and commit)")
        print(f"(a) worker / hand-written                     {single / hand:.3f}   goal <= 1.03")
        print(f"(b) one decode / one process per rendition    {one_decode / separate:.3f}   goal < 1")
        print(f"(c) chunked (2 workers) / single pass         {chunked / single:.3f}")
        print(f"    1080p bitrate chunked / single            {bitrate(a) / bitrate(b):.3f}")
        print(f"    1080p chunked vs single: SSIM {ssim:.4f}, PSNR {psnr:.2f} dB; vs master: SSIM "
              f"{ssim_src:.4f} chunked, {ssim_src_single:.4f} single (difference {ssim_src - ssim_src_single:+.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
