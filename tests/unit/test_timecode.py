from __future__ import annotations

import pytest

from kubemam.media.timecode import Timecode, TimecodeError


def test_non_drop_frame_counts() -> None:
    assert Timecode.parse("00:00:01:00", "25").to_frames("25") == 25
    assert Timecode.parse("10:00:00:00", "25").to_frames("25") == 900000


def test_drop_frame_skips_two_frames_each_minute_but_every_tenth() -> None:
    rate = "30000/1001"
    assert Timecode.parse("00:01:00;02", rate).to_frames(rate) == 1800
    assert Timecode.parse("00:10:00;00", rate).to_frames(rate) == 17982  # 10 minutes of 29.97 fps
    with pytest.raises(TimecodeError, match="dropped"):
        Timecode.parse("00:01:00;00", rate)
    assert str(Timecode.parse("00:10:00;00", rate)) == "00:10:00;00"


def test_frames_beyond_the_rate_and_drop_frame_at_25_are_refused() -> None:
    with pytest.raises(TimecodeError, match="frame 25"):
        Timecode.parse("00:00:00:25", "25")
    with pytest.raises(TimecodeError, match="drop-frame"):
        Timecode.parse("00:00:00;10", "25")
    with pytest.raises(TimecodeError, match="HH:MM:SS:FF"):
        Timecode.parse("0:00:00:10", "25")
