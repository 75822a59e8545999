"""Hiding a master's sound tracks from a demuxer: which bytes change, and which files are left alone."""

from __future__ import annotations

import struct
from pathlib import Path

from kubemam.media.isobmff import (
    HIDDEN_NAME,
    TRACK_NAME,
    hide_sound_tracks,
    patch,
    rename,
    sound_alone,
    tracks_to_hide,
)
from kubemam.media.trackpass import Starts, lead_options, origin, timeline_options


def box(kind: bytes, *content: bytes, large: bool = False) -> bytes:
    body = b"".join(content)
    if large:
        return struct.pack(">I4sQ", 1, kind, 16 + len(body)) + body
    return struct.pack(">I4s", 8 + len(body), kind) + body


def trak(handler: bytes) -> bytes:
    hdlr = box(b"hdlr", b"\0" * 8 + handler + b"\0" * 12)
    return box(b"trak", box(b"tkhd", b"\0" * 84), box(b"mdia", box(b"mdhd", b"\0" * 24), hdlr),
               box(b"stbl", b"\0" * 40))


def movie(*traks: bytes, extra: bytes = b"", moov_last: bool = False) -> bytes:
    ftyp, mdat = box(b"ftyp", b"qt  \0\0\0\0qt  "), box(b"mdat", b"\xaa" * 500, large=True)
    moov = box(b"moov", box(b"mvhd", b"\0" * 100), *traks, extra)
    return ftyp + (mdat + moov if moov_last else moov + mdat)


def reader(data: bytes):  # type: ignore[no-untyped-def]
    return lambda offset, length: data[offset:offset + length]


def hidden(data: bytes) -> bytes:
    return patch(data, 0, tracks_to_hide(reader(data), len(data)))


def handlers(data: bytes) -> list[bytes]:
    """The handler of every box still named trak, in order."""
    found, at = [], 0
    while (at := data.find(b"trak", at)) >= 0:
        hdlr = data.find(b"hdlr", at)
        found.append(data[hdlr + 12:hdlr + 16])
        at += 4
    return found


def test_sound_tracks_are_renamed_free_in_place_wherever_the_index_sits() -> None:
    for moov_last in (False, True):
        data = movie(trak(b"vide"), trak(b"soun"), trak(b"tmcd"), trak(b"soun"), moov_last=moov_last)
        out = hidden(data)
        assert len(out) == len(data) and handlers(out) == [b"vide", b"tmcd"]
        assert out.count(b"free") == 2
        # Only the two four-byte type fields differ.
        assert sum(a != b for a, b in zip(data, out, strict=True)) <= 8


def test_a_range_that_starts_or_ends_inside_a_type_field_is_patched_byte_for_byte() -> None:
    data = movie(trak(b"vide"), trak(b"soun"))
    offsets = tracks_to_hide(reader(data), len(data))
    whole = patch(data, 0, offsets)
    at = offsets[0]
    for first, last in ((at - 3, at + 2), (at + 2, at + 9), (at + 1, at + 3), (0, at + 1)):
        assert patch(data[first:last], first, offsets) == whole[first:last]
    assert patch(data[at + 4:], at + 4, offsets) == data[at + 4:]  # past it: untouched


def test_files_it_does_not_understand_or_must_not_change_are_left_alone() -> None:
    fragmented = movie(trak(b"vide"), trak(b"soun"), extra=box(b"mvex", box(b"trex", b"\0" * 24)))
    sound_only = movie(trak(b"soun"))
    mxf = bytes.fromhex("060e2b34020501010d01020101020400") + b"\0" * 400
    truncated = movie(trak(b"vide"), trak(b"soun"))[:-300]  # the mdat claims more than the file holds
    broken_moov = movie(trak(b"vide"), trak(b"soun")).replace(b"mdia", b"mdix")  # no handler to read
    for data in (fragmented, sound_only, mxf, b"", b"\0\0\0\x01"):
        assert tracks_to_hide(reader(data), len(data)) == []
    assert tracks_to_hide(reader(truncated), len(truncated)) != []  # moov first: found before the mdat
    assert tracks_to_hide(reader(broken_moov), len(broken_moov)) == []


def test_a_scratch_copy_keeps_its_first_sound_tracks_and_nothing_else_changes(tmp_path: Path) -> None:
    data = movie(trak(b"vide"), trak(b"soun"), trak(b"tmcd"), trak(b"soun"), trak(b"soun"))
    master = tmp_path / "master"
    master.write_bytes(data)
    assert hide_sound_tracks(master, keep=1) == 2
    after = master.read_bytes()
    assert len(after) == len(data) and handlers(after) == [b"vide", b"soun", b"tmcd"]
    assert hide_sound_tracks(master, keep=1) == 0  # a second run finds only the kept one
    assert master.read_bytes() == after


def test_a_sound_pass_hides_every_other_track_and_showing_them_again_restores_the_file(tmp_path: Path) -> None:
    data = movie(trak(b"vide"), trak(b"soun"), trak(b"tmcd"), trak(b"soun"))
    offsets = sound_alone(reader(data), len(data))
    assert handlers(patch(data, 0, offsets)) == [b"soun", b"soun"]
    path = tmp_path / "master.mov"
    path.write_bytes(data)
    rename(path, offsets, HIDDEN_NAME)
    assert handlers(path.read_bytes()) == [b"soun", b"soun"] and len(path.read_bytes()) == len(data)
    rename(path, offsets, TRACK_NAME)
    assert path.read_bytes() == data


def test_a_sound_pass_leaves_alone_what_has_no_sound_or_is_not_an_unfragmented_box_tree() -> None:
    fragmented = movie(trak(b"vide"), trak(b"soun"), extra=box(b"mvex", box(b"trex", b"\0" * 24)))
    picture_only = movie(trak(b"vide"), trak(b"tmcd"))
    mxf = bytes.fromhex("060e2b34020501010d01020101020400") + b"\0" * 400
    for data in (fragmented, picture_only, mxf, b""):
        assert sound_alone(reader(data), len(data)) == []


def test_a_track_passed_over_alone_keeps_its_place() -> None:
    later_sound, earlier_sound = Starts(0.0, 0.458, picture_view=0.0), Starts(0.48, 0.0, picture_view=0.48)
    # The stitch's audio: the picture's first frame at 0 — later sound delayed as much, earlier sound cut there.
    assert lead_options(later_sound) == {"itsoffset": "0.458000"}
    assert lead_options(earlier_sound) == {"ss": "0.480000"}
    assert lead_options(Starts(0.021016, 0.021016, 0.0)) == {} == lead_options(Starts(1.0, 1.0000004, 1.0))
    # The ingest's passes: where a pass over both tracks starts them (from the earlier start).
    assert timeline_options(later_sound, "sound") == {"itsoffset": "0.458000"}
    assert timeline_options(later_sound, "picture") == {}
    assert timeline_options(earlier_sound, "picture") == {"itsoffset": "0.480000"}
    assert timeline_options(earlier_sound, "sound") == {}
    # A timecode track at 0 is counted by a picture pass as by one over both: nothing to move.
    assert timeline_options(Starts(0.48, 0.0, picture_view=0.48, text=0.0), "picture") == {}
    assert timeline_options(Starts(0.5, 0.5, picture_view=0.5, text=0.0), "sound") == {"itsoffset": "0.500000"}
    # ffmpeg counts a data track only from less than a second before the picture and sound: a picture pass
    # (picture at 1.2) ignores the timecode track at 0 that a pass over both (sound at 0.478) counts from.
    late_picture = Starts(1.2, 0.478, picture_view=1.2, text=0.0)
    assert timeline_options(late_picture, "picture") == {"itsoffset": "1.200000"}
    assert timeline_options(late_picture, "sound") == {"itsoffset": "0.478000"}
    assert origin(5.0, 3.0) == 5.0 and origin(None, 3.0) == 3.0 and origin(5.0, None) == 5.0
