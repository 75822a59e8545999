"""Read just enough of a QuickTime / ISO BMFF file's box tree to hide tracks from a demuxer.

ffmpeg's mov demuxer builds an index entry for every sample of every track when it opens a file, used or
not: a chunk pod that encodes only the picture held the sound's index too — about 10 MiB per audio track of a
2-hour master (a sample or a PCM chunk every ~21 ms), and broadcast masters carry 8 or 16 audio tracks.
Renaming a track's `trak` box to `free` (same size, so no offset in the file moves) makes the demuxer skip
it. The box tree is walked through a reader of byte ranges: a few small reads, never the sample tables.
Measured, `ffmpeg -i master -t 1 -map 0:v -map 0:a:0 -f null -`, a 60-minute 320x180 master with 16 mono PCM
tracks: 133 MiB as it is, 65 MiB with all sound tracks but the first hidden.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

Reader = Callable[[int, int], bytes]  # (offset, length) -> the bytes there (fewer at the end of the file)

TOP_LEVEL = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"meta", b"PICT", b"styp"}
HIDDEN_NAME = b"free"
TRACK_NAME = b"trak"


class NotIsoBmff(ValueError):
    """The bytes are not a box tree this module understands: nothing is hidden."""


@dataclass(frozen=True)
class Box:
    kind: bytes
    offset: int  # of the box's first byte (its size field)
    size: int  # header included
    header: int  # 8, or 16 with a 64-bit size

    @property
    def body(self) -> int:
        return self.offset + self.header

    @property
    def end(self) -> int:
        return self.offset + self.size


def children(read: Reader, start: int, end: int) -> Iterator[Box]:
    """The boxes laid end to end from start to end; NotIsoBmff on anything that does not fit."""
    offset = start
    while offset + 8 <= end:
        head = read(offset, 16)
        if len(head) < 8:
            raise NotIsoBmff(f"a box header at byte {offset} is cut off")
        size, kind = struct.unpack(">I4s", head[:8])
        header = 8
        if size == 1:
            if len(head) < 16:
                raise NotIsoBmff(f"a 64-bit box size at byte {offset} is cut off")
            size, header = struct.unpack(">Q", head[8:16])[0], 16
        elif size == 0:
            size = end - offset  # to the end of the enclosing box (or file)
        if size < header or offset + size > end:
            raise NotIsoBmff(f"box {kind!r} at byte {offset} claims {size} bytes, past its container")
        yield Box(kind, offset, size, header)
        offset += size


def _child(read: Reader, parent: Box, kind: bytes) -> Box | None:
    return next((box for box in children(read, parent.body, parent.end) if box.kind == kind), None)


def _handler(read: Reader, trak: Box) -> bytes | None:
    """The track's handler type (vide, soun, tmcd, ...): trak > mdia > hdlr, after version, flags and pre_defined."""
    mdia = _child(read, trak, b"mdia")
    hdlr = _child(read, mdia, b"hdlr") if mdia is not None else None
    if hdlr is None or hdlr.size < hdlr.header + 12:
        return None
    return read(hdlr.body + 8, 4)


def tracks_to_hide(read: Reader, size: int, handlers: frozenset[bytes] = frozenset({b"soun"})) -> list[int]:
    """Where to write `free` over the type of every track with one of these handlers: the byte offsets of those
    `trak` type fields. Empty when the file is not a QuickTime / ISO BMFF one, is fragmented (its fragments would
    still name the hidden track), or has no video track left to read."""
    traks = _tracks(read, size)
    if not any(handler == b"vide" for _, handler in traks):
        return []
    return [box.offset + 4 for box, handler in traks if handler in handlers]


def patch(data: bytes, first: int, type_offsets: list[int]) -> bytes:
    """data (the file's bytes from `first` on) with each hidden track's type renamed `free`."""
    if not type_offsets:
        return data
    last = first + len(data)
    patched: bytearray | None = None
    for at in type_offsets:
        for i in range(4):  # a range may begin or end inside the four bytes
            if first <= at + i < last:
                patched = patched if patched is not None else bytearray(data)
                patched[at + i - first] = HIDDEN_NAME[i]
    return bytes(patched) if patched is not None else data


def sound_alone(read: Reader, size: int) -> list[int]:
    """The type offsets of every track but the sound ones (picture, timecode, others), for a pass that decodes
    only the sound: empty when the file is not a QuickTime / ISO BMFF one, is fragmented, or has no sound."""
    traks = _tracks(read, size)
    if not any(handler == b"soun" for _, handler in traks):
        return []
    return [box.offset + 4 for box, handler in traks if handler != b"soun"]


def _tracks(read: Reader, size: int) -> list[tuple[Box, bytes | None]]:
    """The moov's visible tracks and their handlers; empty for anything but an unfragmented box tree."""
    try:
        moov = None
        for box in children(read, 0, size):  # the first box says whether this is a box tree at all (MXF is not)
            if box.kind not in TOP_LEVEL:
                return []
            if box.kind == b"moov":
                moov = box
                break
        if moov is None:
            return []
        inside = list(children(read, moov.body, moov.end))
        if any(box.kind == b"mvex" for box in inside):
            return []
        return [(box, _handler(read, box)) for box in inside if box.kind == b"trak"]
    except NotIsoBmff:
        return []


def rename(path: Path, type_offsets: list[int], name: bytes) -> None:
    """Write a box type (HIDDEN_NAME to hide a track, TRACK_NAME to show it again) at each offset, in place."""
    with open(path, "r+b") as file:
        for at in type_offsets:
            file.seek(at)
            file.write(name)


@contextmanager
def file_reader(path: Path) -> Iterator[Reader]:
    """A Reader over a local file, open for the with-block."""
    with open(path, "rb") as file:
        def read(offset: int, length: int) -> bytes:
            file.seek(offset)
            return file.read(length)
        yield read


def hide_sound_tracks(path: Path, keep: int) -> int:
    """Hide every sound track of a local QuickTime / MP4 file after the first `keep`, in place; how many were
    hidden. Only for a step's scratch copy, once it is hashed and probed: later passes read v:0 and at most
    `keep` sound tracks (a:0, or none for a chunk)."""
    with file_reader(path) as read:
        offsets = tracks_to_hide(read, path.stat().st_size)[keep:]
    rename(path, offsets, HIDDEN_NAME)
    return len(offsets)
