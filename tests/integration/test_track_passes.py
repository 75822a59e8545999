"""Passes that decode one track of a master alone (media/trackpass.py) against one pass over both, with real
ffmpeg: the ingest's QC and proxy must come out on the same timeline, however the tracks' starts differ, and the
master must be left as it was."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kubemam.api.qc import QCPolicy
from kubemam.media.qc import run_qc
from kubemam.media.sample import make_sample
from kubemam.media.trackpass import alone, track_starts
from kubemam.storage.manifest import sha256_file
from kubemam.worker.ingest import make_proxy
from tests.media_checks import ffprobe_json, loud_onset, stream_start, tracks_moved, video_frames

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample(tmp_path_factory.mktemp("media") / "base.mov", width=320, height=180, seconds=10)


def _shifted(base: Path, late: str, target: Path) -> Path:
    """The sample with its sound (or its picture) starting 0.48 s after the other track, or both late against
    the timecode track (at 0): the picture by 1.2 s, the sound by 0.5 s. ffmpeg counts a timecode track only
    from less than a second before the earliest picture or sound, so a pass over the picture alone ignores it
    and one over both counts from it."""
    picture, sound = {"sound": ("0", "0.48"), "picture": ("0.48", "0"), "both": ("1.2", "0.5")}[late]
    return tracks_moved(base, picture, sound, target)


@pytest.mark.parametrize("late", ["sound", "picture", "both", "neither"])
def test_qc_and_proxy_decoded_a_track_at_a_time_match_one_pass_over_both(base: Path, tmp_path: Path,
                                                                          late: str) -> None:
    master = base if late == "neither" else _shifted(base, late, tmp_path / "master.mov")
    before = sha256_file(master)[0]
    starts = track_starts(master)
    assert starts is not None
    expected = {"sound": (0.0, 0.458), "picture": (0.48, 0.0), "both": (1.2, 0.478),  # the sound less priming
                "neither": (0.0, 0.0)}[late]
    assert abs(starts.picture - expected[0]) < 0.03 and abs(starts.sound - expected[1]) < 0.03, starts

    policy = QCPolicy()
    both, apart = run_qc(master, True, policy), run_qc(master, True, policy, None, starts)
    assert both.black and [tuple(round(t, 2) for t in b) for b in apart.black] == [
        tuple(round(t, 2) for t in b) for b in both.black]
    assert both.freezes and apart.freezes == both.freezes
    assert apart.integrated_lufs == both.integrated_lufs and apart.true_peak_dbtp == both.true_peak_dbtp
    assert [p.seconds for p in apart.loudness] == [p.seconds for p in both.loudness]
    assert apart.decode_errors == both.decode_errors == 0

    one, two = tmp_path / "both", tmp_path / "apart"
    one.mkdir()
    two.mkdir()
    make_proxy(master, one, 10.0, True)
    make_proxy(master, two, 10.0, True, starts)
    a, b = one / "proxy.mp4", two / "proxy.mp4"
    kinds = [[s["codec_type"] for s in ffprobe_json(p, "-show_streams")["streams"]] for p in (a, b)]
    assert kinds[0] == kinds[1] == ["video", "audio"]  # no timecode track from the picture pass
    assert video_frames(b) == video_frames(a)
    assert abs(stream_start(b, "v:0") - stream_start(a, "v:0")) < 0.001
    assert abs(stream_start(b, "a:0") - stream_start(a, "a:0")) < 0.025  # one AAC frame
    # The sound against the picture, as the viewer sees it: the loud passage lands on the same frame.
    lead_a, lead_b = loud_onset(a) - stream_start(a, "v:0"), loud_onset(b) - stream_start(b, "v:0")
    assert abs(lead_b - lead_a) < 0.025, (lead_a, lead_b)
    assert (two / "poster.jpg").stat().st_size > 0
    assert sorted(p.name for p in two.iterdir()) == ["poster.jpg", "proxy.mp4"]  # the passes' files are gone
    assert sha256_file(master)[0] == before  # every hidden track shown again


def test_a_master_without_a_second_track_to_hide_is_read_whole(tmp_path: Path) -> None:
    silent = tmp_path / "silent.mov"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=160x90:r=25:d=2", "-c:v", "libx264",
                    str(silent)], check=True)
    assert track_starts(silent) is None
    with alone(silent, "picture") as hidden:
        assert not hidden
    mkv = tmp_path / "master.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=160x90:r=25:d=2", "-f", "lavfi", "-i",
                    "sine=d=2", "-c:v", "libx264", "-c:a", "aac", str(mkv)], check=True)
    assert track_starts(mkv) is None  # Matroska's demuxer does not index ahead: nothing to hide
