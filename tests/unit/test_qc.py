from __future__ import annotations

from datetime import UTC, datetime

from kubemam.api.asset import Marker, Timeline
from kubemam.api.qc import QCPolicy
from kubemam.media.qc import measurement_findings, parse_qc_log, timeline_findings, verdict
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
    policy = QCPolicy()
    findings = measurement_findings(found, policy, 6.0)
    result = verdict(findings, found, policy, "25", Timecode.parse("10:00:00:00", "25"), datetime.now(UTC))
    checks = [(i.check, i.severity, i.start, i.end) for i in result.issues or []]
    # The frozen black second is reported once, as black; the open-ended freeze ends at the duration.
    assert checks[:2] == [("black", "warning", "10:00:00:00", "10:00:01:00"),
                          ("freeze", "warning", "10:00:04:00", "10:00:06:00")]
    # Out of R128 loudness and true peak fail a broadcast delivery by default.
    assert {(c, sev) for c, sev, _, _ in checks[2:]} == {("loudness", "error"), ("truePeak", "error")}
    assert result.verdict == "Failed"
    # A policy for a loud streaming target, that only warns on peaks, passes the same loudness.
    relaxed = QCPolicy(target_lufs=-14, tolerance_lu=1, max_true_peak_dbtp=-1, fail_on=["decode"])
    result = verdict(measurement_findings(found, relaxed, 6.0), found, relaxed, "25", None, datetime.now(UTC))
    assert {i.check for i in result.issues or []} == {"black", "freeze", "truePeak"}
    assert result.verdict == "Warning"


def test_decode_errors_are_counted_from_codec_lines_only() -> None:
    log = ("[h264 @ 0x55d] [error] error while decoding MB 18 7, bytestream 474\n"
           "[aac @ 0x55e] [error] channel element 3.5 is not allocated\n"
           "[Parsed_ebur128_2 @ 0x1] [info] t: 5.5 M: -21.8\n[h264 @ 0x55d] [warning] no frame!\n")
    found = parse_qc_log(log)
    assert found.decode_errors == 2 and found.decode_messages[0] == "h264: error while decoding MB 18 7, bytestream 474"
    issue = verdict(measurement_findings(found, QCPolicy(), 6.0), found, QCPolicy(), "25", None,
                    datetime.now(UTC)).issues
    assert issue is not None and issue[0].check == "decode" and issue[0].severity == "error"


def test_markers_are_judged_against_the_probed_programme() -> None:
    def marker(name: str, start: str, end: str | None = None) -> Marker:
        return Marker(name=name, kind="segment", start=start, end=end)

    timeline = Timeline(frame_rate="30000/1001", drop_frame=True, start_timecode="01:00:00;00")
    start = Timecode.parse("01:00:00;00", "30000/1001", True)
    # 70 s at 29.97: the programme runs 01:00:00;00 to 01:01:10;02 (drop-frame: 01:01:00;00-01 do not exist).
    inside = marker("inside", "01:00:59;29", "01:01:00;02")
    last_frame = marker("last", "01:01:10;01", "01:01:10;02")
    late = marker("late", "01:01:10;02")
    early = marker("early", "00:59:59;29", "01:00:01;00")
    findings = timeline_findings([inside, last_frame, late, early], timeline, start, "30000/1001", 70.07)
    assert [(f.check, f.message.split(" is ")[0]) for f in findings] == [
        ("markers", "marker 'late' start 01:01:10;02"), ("markers", "marker 'early' start 00:59:59;29")]
    wrong_rate = timeline_findings([late], timeline, start, "25/1", 70.0)
    assert [f.check for f in wrong_rate] == ["frameRate"] and "25/1" in wrong_rate[0].message
    assert timeline_findings([inside], timeline, start, "0/0", 70.07) == []


def test_clean_measurements_pass() -> None:
    found = parse_qc_log("[Parsed_ebur128_0 @ 0x1] Summary:\n    I:   -23.2 LUFS\n    Peak:  -3.0 dBFS\n")
    policy = QCPolicy()
    assert verdict(measurement_findings(found, policy, 10.0), found, policy, "25", None,
                   datetime.now(UTC)).verdict == "Passed"


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
    vtt = sprite_vtt(12, 10.0, 115.0, 10, 1, size)
    cues = vtt.split("\n\n")[1:]
    assert cues[0] == "00:00:00.000 --> 00:00:10.000\nsprite-001.jpg#xywh=0,0,320,180"
    # A 10x1 sheet is full after ten thumbnails; the eleventh starts the second sheet.
    assert cues[10].startswith("00:01:40.000 --> 00:01:50.000\nsprite-002.jpg#xywh=0,0,320,180")
    assert cues[11].startswith("00:01:50.000 --> 00:01:55.000\nsprite-002.jpg#xywh=320,0,320,180")


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


def test_the_loudness_series_keeps_the_loudest_reading_of_each_second() -> None:
    from kubemam.media.qc import LOUDNESS_FLOOR, loudness_series

    lines = []
    for tenth in range(1, 31):  # 3 s of 100 ms meter lines; a loud blip at 1.5 s
        m = -18.0 if tenth == 15 else -30.0
        s = "-inf" if tenth < 5 else f"{-28.0 + tenth / 100:.2f}"
        lines.append(f"[Parsed_ebur128_0 @ 0x1] [info] t: {tenth / 10:.6f}  TARGET:-23 LUFS    M:{m:6.1f} S:{s:>6}"
                     "     I: -30.0 LUFS       LRA:   0.0 LU  FTPK: -37.2 -37.2 dBFS  TPK: -37.2 -37.2 dBFS")
    series = loudness_series("\n".join(lines))
    assert [p.seconds for p in series] == [0.0, 1.0, 2.0, 3.0]
    assert series[1].momentary == -18.0 and series[0].momentary == -30.0
    assert series[0].short_term == -28.0 + 9 / 100 and series[3].short_term == -28.0 + 30 / 100
    assert min(p.short_term for p in series) > LOUDNESS_FLOOR


def test_a_two_hour_log_is_read_line_by_line_in_bounded_memory() -> None:
    """ebur128 writes ten meter lines a second: ~13 MB of log for two hours. The reader keeps the per-second
    points and the findings, never the log (run_qc feeds it from ffmpeg's stderr file, line by line)."""
    import tracemalloc

    from kubemam.media.qc import QCLogReader

    def lines():  # the log of a 2-hour programme, made as it is read
        for tenth in range(72_000):
            t = tenth / 10
            yield (f"[Parsed_ebur128_1 @ 0x55d] [info] t: {t:<10.1f} TARGET:-23 LUFS    M: -22.{tenth % 10} "
                   f"S: -23.1     I: -23.0 LUFS       LRA:   2.0 LU  FTPK: -3.0 dBFS  TPK: -3.0 dBFS\n")
            if tenth == 36_000:
                yield "[blackdetect @ 0x1] [info] black_start:3600 black_end:3601.5 black_duration:1.5\n"
        yield from (line + "\n" for line in LOG.splitlines()[5:])  # the summary

    reader = QCLogReader()
    tracemalloc.start()
    for line in lines():
        reader.feed(line)
    found = reader.measurements()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(found.loudness) == 7_200 and found.loudness[1].momentary == -22.0  # the loudest of the second
    assert found.black == [(3600.0, 3601.5)] and found.integrated_lufs == -14.2 and found.true_peak_dbtp == 0.4
    assert peak < 4 * 1024 * 1024, f"{peak / 1e6:.1f} MB held for a 13 MB log"
