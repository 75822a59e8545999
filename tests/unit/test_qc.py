from __future__ import annotations

from datetime import UTC, datetime

from kubemam.media.qc import QCThresholds, parse_qc_log, verdict
from kubemam.media.timecode import Timecode, from_frames, seconds_to_timecode

LOG = """\
[blackdetect @ 0x1] black_start:0 black_end:1 black_duration:1
[freezedetect @ 0x2] lavfi.freezedetect.freeze_start: 0
[freezedetect @ 0x2] lavfi.freezedetect.freeze_duration: 1
[freezedetect @ 0x2] lavfi.freezedetect.freeze_end: 1
[freezedetect @ 0x2] lavfi.freezedetect.freeze_start: 4
[Parsed_ebur128_2 @ 0x3] Summary:

  Integrated loudness:
    I:         -14.2 LUFS
    Threshold: -24.5 LUFS

  Loudness range:
    LRA:         6.5 LU

  True peak:
    Peak:        0.4 dBFS
"""


def test_parse_and_verdict_with_timecodes() -> None:
    found = parse_qc_log(LOG)
    assert found.black == [(0.0, 1.0)] and found.freezes == [(0.0, 1.0), (4.0, None)]
    assert (found.integrated_lufs, found.loudness_range_lu, found.true_peak_dbtp) == (-14.2, 6.5, 0.4)
    result = verdict(found, QCThresholds(), "25", Timecode.parse("10:00:00:00", "25"), 6.0, datetime.now(UTC))
    checks = [(i.check, i.start, i.end) for i in result.issues or []]
    # The frozen black second is reported once, as black; the open-ended freeze ends at the duration.
    assert checks[:2] == [("black", "10:00:00:00", "10:00:01:00"), ("freeze", "10:00:04:00", "10:00:06:00")]
    assert {c for c, _, _ in checks} == {"black", "freeze", "loudness", "truePeak"}
    assert result.verdict == "Warning"


def test_clean_measurements_pass() -> None:
    found = parse_qc_log("[Parsed_ebur128_0 @ 0x1] Summary:\n    I:   -23.2 LUFS\n    Peak:  -3.0 dBFS\n")
    assert verdict(found, QCThresholds(), "25", None, 10.0, datetime.now(UTC)).verdict == "Passed"


def test_frames_round_trip_including_drop_frame() -> None:
    for rate, drop in (("25", False), ("30000/1001", True), ("60000/1001", True)):
        for frame in (0, 1, 1799, 1800, 17982, 17983, 107892, 2_000_001):
            tc = from_frames(frame, rate, drop)
            assert Timecode.parse(str(tc), rate, drop).to_frames(rate) == frame
    assert seconds_to_timecode(4.0, "25", Timecode.parse("10:00:00:00", "25")) == "10:00:04:00"


def test_sprite_index_points_into_the_sheet() -> None:
    from kubemam.media.thumbnails import sprite_vtt, thumb_size

    size = thumb_size(1920, 1080, 320)
    assert size == (320, 180)
    vtt = sprite_vtt(12, 10.0, 115.0, 10, size)
    cues = vtt.split("\n\n")[1:]
    assert cues[0] == "00:00:00.000 --> 00:00:10.000\nsprite.jpg#xywh=0,0,320,180"
    assert cues[10].startswith("00:01:40.000 --> 00:01:50.000\nsprite.jpg#xywh=0,180,320,180")
    assert cues[11].startswith("00:01:50.000 --> 00:01:55.000\nsprite.jpg#xywh=320,180,320,180")


def test_ffmpeg_progress_blocks_become_progress_lines() -> None:
    from kubemam.media.progress import latest_progress, parse_ffmpeg_progress, progress_line

    stream = ["frame=50", "fps=100.0", "out_time_us=2000000", "speed=4.0x", "progress=continue",
              "frame=150", "fps=N/A", "out_time_us=6000000", "speed=N/A", "progress=end"]
    updates = list(parse_ffmpeg_progress(stream))
    assert [(u.out_seconds, u.fps, u.speed, u.done) for u in updates] == [(2.0, 100.0, 4.0, False),
                                                                         (6.0, None, None, True)]
    log = "\n".join(["noise", progress_line("ingest", 40, 99.94, 3), "more noise", progress_line("ingest", 101)])
    assert latest_progress(log) == {"step": "ingest", "percent": 100}
    assert latest_progress("nothing here") is None
