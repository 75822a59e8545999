"""The CMAF splitter streams: a track file is walked box by box and copied a bounded chunk at a time,
so the packager's memory does not grow with the programme (issue 18). A real ffmpeg remux, no mocks."""

from __future__ import annotations

import io
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from kubemam.media.cmaf import COPY_CHUNK, CmafError, copy_range, fragment_command, read_track, scan_track

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def fragmented(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 s of 320x180 H.264 at 3 Mb/s with a 2 s closed GOP, remuxed as the package step does: ~15 MiB."""
    folder = tmp_path_factory.mktemp("cmaf")
    source = folder / "rendition.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=40",
                    "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "3M", "-maxrate", "3M", "-bufsize", "3M",
                    "-x264-params", "nal-hrd=cbr", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
                    "-pix_fmt", "yuv420p", str(source)], check=True)
    target = folder / "track.frag.mp4"
    subprocess.run(fragment_command(source, target, "video", 2), check=True)
    return target


def test_scan_reads_metadata_only_and_matches_the_in_memory_reader(fragmented: Path) -> None:
    size = fragmented.stat().st_size
    assert size > 10 * MiB
    tracemalloc.start()
    try:
        with open(fragmented, "rb") as stream:
            track = scan_track(stream, size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 * MiB, peak  # the moov and one moof at a time, never an mdat
    assert len(track.segments) == 20 and track.handler == "vide" and track.codecs.startswith("avc1.")
    assert track.duration == 40 * track.timescale
    assert [s.decode_time for s in track.segments] == [n * 2 * track.timescale for n in range(20)]
    assert read_track(fragmented.read_bytes()) == track


def test_split_files_are_the_track_byte_for_byte_with_bounded_memory(fragmented: Path, tmp_path: Path) -> None:
    size = fragmented.stat().st_size
    with open(fragmented, "rb") as stream:
        track = scan_track(stream, size)
        tracemalloc.start()
        try:
            copy_range(stream, tmp_path / "init.mp4", 0, track.init_end)
            for segment in track.segments:
                copy_range(stream, tmp_path / f"seg-{segment.number:05d}.m4s", segment.start, segment.end)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < COPY_CHUNK + 1 * MiB, peak
    parts = [tmp_path / "init.mp4", *sorted(tmp_path.glob("seg-*.m4s"))]
    assert len(parts) == 21
    whole = fragmented.read_bytes()
    assert b"".join(p.read_bytes() for p in parts) == whole[:track.segments[-1].end]
    assert whole[track.segments[-1].end + 4:track.segments[-1].end + 8] in (b"", b"mfra")  # ffmpeg's index, unused
    # The buffered path (no file descriptor to copy between in the kernel) writes the same bytes.
    last = track.segments[-1]
    copy_range(io.BytesIO(whole), tmp_path / "buffered.m4s", last.start, last.end)
    assert (tmp_path / "buffered.m4s").read_bytes() == (tmp_path / f"seg-{last.number:05d}.m4s").read_bytes()
    # A segment starts with its moof and holds its whole key frame within first_sample_end.
    first = (tmp_path / "seg-00001.m4s").read_bytes()
    assert first[4:8] == b"moof" and 0 < track.segments[0].first_sample_end < len(first)


def test_truncated_file_is_a_clear_error(fragmented: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    with open(fragmented, "rb") as stream, open(cut, "wb") as out:
        out.write(stream.read(fragmented.stat().st_size - 1000))
    with open(cut, "rb") as stream, pytest.raises(CmafError, match="claims"):
        scan_track(stream, cut.stat().st_size)
