"""Long-master benchmark (issue 18): a synthetic master through ingest, chunked transcode, package and
archive, each step the real `kubemam worker <step>` process against a real MinIO; the peak memory of every
step at two programme lengths, which must not grow with the length.

Master (cached in ~/.cache/kubemam/bench-long-master): lavfi testsrc2 320x180 25 fps, x264 ultrafast with a
1 s GOP (crf 30) and a 48 kHz stereo sine in AAC, in a .mov with a timecode track — the codec the ingest tests
use, cheap to decode on 2 cores; one minute encoded and repeated by stream copy to the length asked for.
Ladder: 320x180 and 160x90 H.264 ultrafast, stereo AAC, 6 s segments, chunks of
--chunk-seconds (the same at both lengths: a chunk's work must not depend on the programme's length), DASH +
HLS in the clear. Every step's input comes from the planners, as the operator builds it: ingest_request,
fit_ladder/chunking/transcode_inputs (as plan_transcode calls them), completed + plan_package, and
plan_archive's Job (its container env, the S3 Secret's keys filled in) for a one-location policy.

Per step (chunks: the largest of all indexes; wall time: their sum, run one after another):
  largest  the largest single process of the step's tree (worker, ffmpeg, …): its VmHWM (a high-water
           mark, so sampling misses only what grows after the last sample) — not wait4's ru_maxrss, which
           at exec takes in the forking parent's size (this benchmark's)
  tree     the anonymous memory of the step's own memory cgroup (proctree.MemoryGroup: heaps and buffers of the
           worker and every process it starts, what a pod's limit cannot take back; shared libraries left out),
           sampled every 0.05 s (a peak between two samples is missed). Without cgroup v1 (not root), the sum
           of VmRSS over the process tree, which counts ffmpeg's libraries once per process running then
and, for the long master, each command's (python, ffmpeg, ffprobe, kubemam-encrypt) largest VmHWM seen.
Each step's output is checked where it landed (the renditions, the package's manifest, the archived master).
Goals (issue 18): every step ≤ 300 MiB (tree), and the long master's peak within ±10 % of the short one's.
They are printed, not enforced, unless --strict. Wall times are noisy on a shared machine.

--only package measures the package step alone on renditions made directly (cached): what the stitch writes —
fragmented MP4, one GOP a segment, the ladder's two rungs and its stereo AAC — without the hour the 120-minute
transcode takes; its input from plan_package as in the pipeline, but with no previews (so no sprite sheets:
a few JPEGs, whatever the length). --until does not apply to it.

Usage: .venv/bin/python bench/long_master.py [--minutes 10 120] [--smoke] [--chunk-seconds 300] [--strict]
       [--until ingest|transcode|package|archive] [--only package]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proctree import MemoryGroup, descendants, memory

from kubemam.api.archive import ArchivePolicySpec
from kubemam.api.asset import MediaAssetSpec, MediaAssetStatus, RenditionStatus
from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.config import OperatorConfig
from kubemam.media.encode import FRAGMENTED_MOVFLAGS
from kubemam.plan.archive_facts import asset_prefix
from kubemam.plan.archiving import ArchiveFacts, master_key, plan_archive
from kubemam.plan.facts import AssetFacts
from kubemam.plan.ingest import ingest_request
from kubemam.plan.package import plan_package
from kubemam.plan.transcode import chunking, completed, fit_ladder, master_facts, transcode_inputs
from kubemam.steps.ingest import IngestResult
from kubemam.steps.registry import INGEST, step
from kubemam.storage.uri import S3Uri
from kubemam_local.gotools import resolve_tool
from kubemam_local.minio import MinioServer

CACHE = Path.home() / ".cache" / "kubemam" / "bench-long-master"
BUCKET = "kubemam-library"
NAMESPACE = "bench"
MiB = 1024 * 1024
LIMIT_MIB = 300
TOLERANCE = 0.10
S3_SECRET = "kubemam-s3"


def ladder(chunk_seconds: int) -> TranscodeLadderSpec:
    rung = {"codec": "h264", "profile": "high", "preset": "ultrafast",
            "rateControl": {"mode": "crf", "crf": 30, "maxrateKbps": 800, "bufsizeKbps": 1600}}
    return TranscodeLadderSpec.model_validate({
        "segmentDurationSeconds": 6,
        "renditions": [{"name": "h264-180p", "width": 320, "height": 180, **rung},
                       {"name": "h264-90p", "width": 160, "height": 90, **rung}],
        "audio": [{"name": "stereo", "bitrateKbps": 96}],
        "chunking": {"chunkSeconds": chunk_seconds, "maxParallel": 2},
        "packaging": {"formats": ["dash", "hls"]},
    })


def policy() -> ArchivePolicySpec:
    return ArchivePolicySpec.model_validate({
        "locations": [{"name": "nearline", "uri": "s3://kubemam-nearline/archive", "site": "a"}],
        "tiers": [{"name": "hot", "location": "nearline", "storageClass": "STANDARD"}],
        "copies": {"minCopies": 1, "requireOffsite": False},
    })


def master(minutes: int) -> Path:
    """The synthetic programme, made once and cached: one minute encoded, then repeated by stream copy (the
    concat demuxer) to the length asked for — a 2-hour master in seconds, not the minutes encoding it takes.
    Its structure is a long master's (one moov indexing every sample, one GOP a second, a timecode track);
    that the picture repeats each minute matters to no step's memory."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"programme-{minutes}m.mov"
    if path.exists():
        return path
    unit = CACHE / "minute.mov"
    if not unit.exists():
        tmp = unit.with_suffix(".tmp.mov")
        subprocess.run(["nice", "-n", "10", "ffmpeg", "-v", "error", "-y",
                        "-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=60",
                        "-f", "lavfi", "-i", "sine=f=1000:sample_rate=48000:d=60,volume=0.3",
                        "-map", "0:v", "-map", "1:a", "-ac", "2", "-c:v", "libx264", "-preset", "ultrafast",
                        "-crf", "30", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-shortest",
                        str(tmp)], check=True)
        tmp.rename(unit)
    print(f"making {path.name} ...", flush=True)
    listing = CACHE / f"programme-{minutes}m.txt"
    listing.write_text(f"file '{unit}'\n" * minutes)
    tmp = path.with_suffix(".tmp.mov")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                    "-map", "0:v", "-map", "0:a", "-c", "copy", "-timecode", "10:00:00:00", str(tmp)], check=True)
    listing.unlink()
    tmp.rename(path)
    return path


SEGMENT_SECONDS = 6
GOP = 25 * SEGMENT_SECONDS  # one GOP a segment, as media/gop.py gives the ladder at 25 fps


def renditions(minutes: int) -> dict[str, Path]:
    """The ladder's renditions as the stitch writes them, made once and cached: name -> file."""
    CACHE.mkdir(parents=True, exist_ok=True)
    files = {name: CACHE / f"rendition-{name}-{minutes}m.mp4" for name in ("h264-180p", "h264-90p", "stereo")}
    if all(path.exists() for path in files.values()):
        return files
    seconds = minutes * 60
    tmp = {name: path.with_suffix(".tmp.mp4") for name, path in files.items()}
    video = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "30", "-g", str(GOP), "-keyint_min", str(GOP),
             "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-movflags", FRAGMENTED_MOVFLAGS]
    print(f"making the {minutes} min renditions ...", flush=True)
    subprocess.run(["nice", "-n", "10", "ffmpeg", "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=s=320x180:r=25:d={seconds}",
                    "-f", "lavfi", "-i", f"sine=f=1000:sample_rate=48000:d={seconds},volume=0.3",
                    "-map", "0:v", *video, str(tmp["h264-180p"]),
                    "-map", "0:v", "-vf", "scale=160:90", *video, str(tmp["h264-90p"]),
                    "-map", "1:a", "-ac", "2", "-c:a", "aac", "-b:a", "96k", "-movflags", FRAGMENTED_MOVFLAGS,
                    "-frag_duration", str(SEGMENT_SECONDS * 1_000_000), str(tmp["stereo"])], check=True)
    for name, path in tmp.items():
        path.rename(files[name])
    return files


def _worker_env(minio: MinioServer) -> dict[str, str]:
    """What every worker process gets: this MinIO, its credentials, the encryptor the package step runs."""
    return {**os.environ, "AWS_ENDPOINT_URL": minio.endpoint, "AWS_ACCESS_KEY_ID": minio.access_key,
            "AWS_SECRET_ACCESS_KEY": minio.secret_key, "KUBEMAM_ENCRYPT": str(resolve_tool("kubemam-encrypt"))}


def package_only(minio: MinioServer, minutes: int, work: Path) -> Run:
    """The package step alone, on renditions uploaded as a transcode would leave them."""
    run = Run(minutes)
    work.mkdir(parents=True, exist_ok=True)
    s3 = minio.client()
    name = f"pkg-{minutes}m-{uuid.uuid4().hex[:6]}"
    root = f"s3://{BUCKET}/{NAMESPACE}/{name}"
    done = []
    for rung, path in renditions(minutes).items():
        key = f"{NAMESPACE}/{name}/renditions/{rung}.mp4"
        s3.upload_file(str(path), BUCKET, key)
        run.master_mib += path.stat().st_size / MiB
        done.append(RenditionStatus(name=rung, kind="audio" if rung == "stereo" else "video",
                                    uri=f"s3://{BUCKET}/{key}", size_bytes=path.stat().st_size,
                                    spec_hash=uuid.uuid4().hex[:16]))
    spec = MediaAssetSpec.model_validate({"source": {"uri": f"s3://{BUCKET}/incoming/{name}.mov"},
                                          "metadata": {"title": name}, "ladderRef": {"name": "long"}})
    packaging = plan_package(name, str(uuid.uuid4()), spec, ladder(300), done, None, root, NAMESPACE)
    assert packaging is not None
    step_env = {**_worker_env(minio), "KUBEMAM_STEP_INPUT": json.dumps(packaging.inputs)}
    measured, packaged = run_worker("package", step_env, work)
    _record(run, "package", measured)
    _landed(s3, str(packaged.get("manifestUri")), None)
    return run


def _tree(root: int) -> dict[int, tuple[str, int, int]]:
    """root and every descendant: pid -> (command, resident bytes, peak resident bytes)."""
    return {pid: found for pid in descendants(root) if (found := memory(pid)) is not None}


@dataclass
class Measured:
    seconds: float = 0.0
    largest_mib: float = 0.0
    tree_mib: float = 0.0
    runs: int = 0
    by_command: dict[str, float] = field(default_factory=dict)  # command -> its largest peak (VmHWM), MiB

    def add(self, other: Measured) -> None:
        """Chunks: the worst index's memory, the sum of their times."""
        self.seconds += other.seconds
        self.largest_mib = max(self.largest_mib, other.largest_mib)
        self.tree_mib = max(self.tree_mib, other.tree_mib)
        self.runs += other.runs
        for command, mib in other.by_command.items():
            self.by_command[command] = max(self.by_command.get(command, 0.0), mib)


TREE_MEASURES: set[str] = set()  # how "tree" was measured in this run (see the docstring)


def run_worker(name: str, env: dict[str, str], work: Path) -> tuple[Measured, dict[str, Any]]:
    """One `kubemam worker <name>` process, measured from outside; its termination message."""
    message = work / f"termination-{uuid.uuid4().hex}"
    env = {**env, "KUBEMAM_TERMINATION_MESSAGE_PATH": str(message), "TMPDIR": str(work / "scratch")}
    (work / "scratch").mkdir(exist_ok=True)
    log = work / f"{name}.log"
    started = time.perf_counter()
    group = MemoryGroup.open(f"kubemam-bench-{uuid.uuid4().hex[:12]}")
    TREE_MEASURES.add("its memory cgroup's anonymous bytes" if group else "the sum of VmRSS")
    with open(log, "a") as out:
        process = subprocess.Popen([sys.executable, "-m", "kubemam", "worker", name], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, preexec_fn=group.join if group else None)
        peak = [0]
        by_command: dict[str, int] = {}
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                tree = _tree(process.pid)
                now = group.anonymous() if group else sum(rss for _, rss, _ in tree.values())
                peak[0] = max(peak[0], now)
                for command, _, hwm in tree.values():
                    by_command[command] = max(by_command.get(command, 0), hwm)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, _ = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        done.set()
        sampler.join()
    if group:
        group.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"worker {name} failed ({code}); see {log}:\n{log.read_text()[-3000:]}")
    result = json.loads(message.read_text()) if message.exists() else {}
    # Not wait4's ru_maxrss: at exec Linux folds the forking parent's (this benchmark's) high-water mark into
    # the child's, so it reads this process's size whenever that is the larger. VmHWM is per exec'd image.
    largest = max(by_command.values(), default=0)
    # The group's count stands alone: a process's VmHWM counts the libraries it maps, which it leaves out.
    return Measured(elapsed, largest / MiB, (peak[0] if group else max(peak[0], largest)) / MiB, 1,
                    {command: hwm / MiB for command, hwm in by_command.items()}), result


def _record(run: Run, key: str, measured: Measured) -> None:
    """Keep a step's figures and print them at once: a long run's early steps are not lost if it is cut off."""
    run.steps[key] = measured
    print(f"  {run.minutes} min {key}: largest {measured.largest_mib:.0f} MiB, tree {measured.tree_mib:.0f} MiB, "
          f"{measured.seconds:.1f} s", flush=True)


@dataclass
class Run:
    minutes: int
    master_mib: float = 0.0
    steps: dict[str, Measured] = field(default_factory=dict)


STEPS = ("ingest", "transcode", "package", "archive")


def pipeline(minio: MinioServer, minutes: int, chunk_seconds: int, work: Path, until: str = "archive") -> Run:
    run = Run(minutes)
    work.mkdir(parents=True, exist_ok=True)
    path = master(minutes)
    run.master_mib = path.stat().st_size / MiB
    s3 = minio.client()
    name = f"long-{minutes}m-{uuid.uuid4().hex[:6]}"
    source = f"s3://{BUCKET}/incoming/{name}.mov"
    s3.upload_file(str(path), BUCKET, f"incoming/{name}.mov")
    env = _worker_env(minio)
    spec = MediaAssetSpec.model_validate({"source": {"uri": source}, "metadata": {"title": name},
                                          "timeline": {"frameRate": "25", "startTimecode": "10:00:00:00"},
                                          "ladderRef": {"name": "long"}, "archivePolicyRef": {"name": "long"}})
    the_ladder = ladder(chunk_seconds)
    config = OperatorConfig(s3_endpoint=minio.endpoint, s3_credentials_secret=S3_SECRET,
                            library_uri=f"s3://{BUCKET}")
    uid = str(uuid.uuid4())
    facts = AssetFacts(name, NAMESPACE, uid, 1, spec, MediaAssetStatus(), True, True, ladder=the_ladder)

    # ingest: probe, checksum, QC, proxy, thumbnails
    request = ingest_request(facts, config)
    measured, reported = run_worker("ingest", {**env, "KUBEMAM_STEP_INPUT": json.dumps(request.inputs)}, work)
    _record(run, "ingest", measured)
    if until == "ingest":
        return run
    parsed = step(INGEST).parse_result(reported)
    assert isinstance(parsed, IngestResult), reported
    technical = parsed.full_technical()
    if technical is None:
        raise SystemExit(f"ingest reported no technical metadata: {str(reported)[:500]}")
    status = MediaAssetStatus(technical=technical, previews=parsed.previews, qc=parsed.qc)

    # transcode: the Indexed Job's chunks, one process per index, then the stitch (audio encoded there)
    root = facts.root(config)
    fit = fit_ladder(the_ladder, technical, f"{root}/renditions")
    plan = chunking(the_ladder, master_facts(technical))
    if plan is None:
        raise SystemExit(f"{minutes} min in chunks of {chunk_seconds} s is one chunk: lower --chunk-seconds")
    video = [t for t in fit.targets if t.kind == "video"]
    chunk_inputs = json.dumps(transcode_inputs(source, technical, the_ladder, video, "chunk", f"{root}/chunks", plan))
    chunks = Measured()
    for index in range(plan.count):
        measured, _ = run_worker("transcode", {**env, "KUBEMAM_STEP_INPUT": chunk_inputs,
                                               "JOB_COMPLETION_INDEX": str(index)}, work)
        chunks.add(measured)
    _record(run, "transcode chunk", chunks)
    stitch_inputs = transcode_inputs(source, technical, the_ladder, fit.targets, "stitch", f"{root}/chunks", plan)
    measured, stitched = run_worker("transcode", {**env, "KUBEMAM_STEP_INPUT": json.dumps(stitch_inputs)}, work)
    _record(run, "transcode stitch", measured)
    done = completed(fit.targets, None, [stitched])
    renditions = [done[t.name] for t in fit.targets if t.name in done]
    if len(renditions) != len(fit.targets):
        raise SystemExit(f"the stitch reported {sorted(done)}, not every rung of {[t.name for t in fit.targets]}")
    for rendition in renditions:
        _landed(s3, rendition.uri, rendition.size_bytes)
    if until == "transcode":
        return run

    # package: every rendition into DASH + HLS
    packaging = plan_package(name, uid, spec, the_ladder, renditions, status.previews, root, NAMESPACE)
    assert packaging is not None
    measured, packaged = run_worker("package", {**env, "KUBEMAM_STEP_INPUT": json.dumps(packaging.inputs)}, work)
    _record(run, "package", measured)
    _landed(s3, str(packaged.get("manifestUri")), None)
    if until == "package":
        return run

    # archive: the place Job plan_archive asks for, its env as the kubelet would give it
    archive_facts = ArchiveFacts(name, NAMESPACE, uid, spec, status.model_copy(update={"renditions": renditions}),
                                 policy(), {}, [], [], [])
    outcome = plan_archive(archive_facts, config, datetime.now(UTC))
    jobs = [j for j in outcome.create_jobs if j["metadata"]["labels"]["kubemam.io/step"] == "archive"]
    if len(jobs) != 1:
        raise SystemExit(f"plan_archive asked for {len(jobs)} archive Jobs: {outcome.verdicts}")
    container = jobs[0]["spec"]["template"]["spec"]["containers"][0]
    archive_env = dict(env)
    secrets = {"AWS_ACCESS_KEY_ID": minio.access_key, "AWS_SECRET_ACCESS_KEY": minio.secret_key}
    for entry in container.get("env") or []:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref and ref["name"] == S3_SECRET:
            archive_env[entry["name"]] = secrets[ref["key"]]
        elif "value" in entry:
            archive_env[entry["name"]] = entry["value"]
    measured, _ = run_worker("archive", archive_env, work)
    _record(run, "archive", measured)
    archived = f"{asset_prefix(archive_facts.policy.locations[0], NAMESPACE, name)}/{master_key(source)}"
    _landed(s3, archived, path.stat().st_size)
    return run


def _landed(s3: Any, uri: str, size: int | None) -> None:
    """A step's output is in storage (at its size, when known), or the run stops naming it."""
    where = S3Uri.parse(uri)
    try:
        head = s3.head_object(Bucket=where.bucket, Key=where.key)
    except s3.exceptions.ClientError as err:
        raise SystemExit(f"{uri} is not in storage: {err}") from err
    if size is not None and head["ContentLength"] != size:
        raise SystemExit(f"{uri} holds {head['ContentLength']} bytes, not {size}")


def report(small: Run, large: Run) -> list[str]:
    """The table and the goals; returns the goals missed."""
    print(f"\ninputs: {small.minutes} min ({small.master_mib:.0f} MiB) and {large.minutes} min "
          f"({large.master_mib:.0f} MiB); peak RSS in MiB as largest process / process tree "
          f"(the tree: {' and '.join(sorted(TREE_MEASURES))})")
    print(f"  {'step':<18} {f'{small.minutes} min':>13} {f'{large.minutes} min':>13} {'ratio (tree)':>12} "
          f"{'wall s':>15}")
    over, grew = [], []
    smalls = small.steps
    for key, big in large.steps.items():
        little = smalls[key]
        ratio = big.tree_mib / little.tree_mib
        print(f"  {key:<18} {little.largest_mib:5.0f} /{little.tree_mib:5.0f}  {big.largest_mib:5.0f} /"
              f"{big.tree_mib:5.0f}  {ratio:11.2f}× {little.seconds:7.1f}/{big.seconds:7.1f}")
        if max(little.tree_mib, big.tree_mib) > LIMIT_MIB:
            over.append(f"{key}: {max(little.tree_mib, big.tree_mib):.0f} MiB > {LIMIT_MIB} MiB")
        if abs(ratio - 1) > TOLERANCE:
            grew.append(f"{key}: the {large.minutes} min master's peak is {ratio:.2f}× the {small.minutes} min one's")
    counts = ", ".join(f"{run.steps[k].runs} at {run.minutes} min" for run in (small, large) for k in run.steps
                       if k.startswith("transcode chunk"))
    print(f"  (transcode chunk: the worst index's peak, wall time summed over the indexes run one at a time; "
          f"{counts})")
    for key, big in large.steps.items():
        print(f"  {key} at {large.minutes} min, each command's largest peak (VmHWM, sampled): "
              + ", ".join(f"{command} {mib:.0f}" for command, mib in sorted(big.by_command.items(),
                                                                          key=lambda item: -item[1])))
    print(f"goal: every step ≤ {LIMIT_MIB} MiB: {'MISSED' if over else 'met'}")
    print(f"goal: {large.minutes} min within ±{TOLERANCE:.0%} of {small.minutes} min: {'MISSED' if grew else 'met'}")
    for line in over + grew:
        print(f"  MISSED {line}")
    return over + grew


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, nargs=2, default=[10, 120], metavar=("SHORT", "LONG"))
    parser.add_argument("--chunk-seconds", type=int, default=300)
    parser.add_argument("--smoke", action="store_true", help="1 and 2 minutes in 30 s chunks")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--until", choices=STEPS, default="archive",
                        help="stop after this step (measure one step's growth without the hours the rest take)")
    parser.add_argument("--only", choices=["package"],
                        help="this step alone, on renditions made directly (no ingest or transcode before it)")
    args = parser.parse_args()
    minutes, chunk_seconds = ([1, 2], 30) if args.smoke else (sorted(args.minutes), args.chunk_seconds)
    with tempfile.TemporaryDirectory(prefix="kubemam-long-master-") as tmp:
        work = Path(tmp)
        with MinioServer(buckets=[BUCKET, "kubemam-nearline"], workdir=work / "minio") as minio:
            runs = []
            for length in minutes:
                if args.only == "package":
                    print(f"{length} min renditions: package ...", flush=True)
                    runs.append(package_only(minio, length, work / f"{length}m"))
                    continue
                print(f"{length} min master: ingest, transcode in {chunk_seconds} s chunks, package, archive ...",
                      flush=True)
                runs.append(pipeline(minio, length, chunk_seconds, work / f"{length}m", args.until))
        missed = report(runs[0], runs[1])
    if missed and args.strict:
        sys.exit(1)


if __name__ == "__main__":
    main()
