"""CMAF tracks: one rendition re-muxed to fragmented MP4, then split into an init segment and
media segments by walking ISO-BMFF boxes (the remux command is built, not run, here).

The walk streams (issue 18): it reads box headers, the moov and each moof, and seeks over every
mdat; segments are then copied out by byte range (copy_range). Memory holds one fragment's
metadata and one copy chunk, whatever the programme's length.

Video fragments start at every keyframe, and the transcoder put keyframes exactly on segment
boundaries, so one fragment is one segment and every rendition's segments align. Audio has no
keyframes to cut at; its fragments are cut by duration.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import ffmpeg


class CmafError(ValueError):
    """A file that is not the fragmented MP4 the packager expects."""


def fragment_command(source: Path, target: Path, kind: str, segment_seconds: int) -> list[str]:
    """Stream-copy one track of a rendition into fragmented MP4 (CMAF brand, base-is-moof)."""
    args: dict[str, Any] = {"c": "copy", "map_metadata": -1, "f": "mp4",
                            "movflags": "+cmaf+empty_moov+default_base_moof+separate_moof"}
    if kind == "video":
        args["movflags"] += "+frag_keyframe"
        args["write_tmcd"] = 0  # the timecode track stays in the mezzanine rendition, not in delivery
        stream = ffmpeg.input(str(source))["v:0"]
    else:
        args["frag_duration"] = segment_seconds * 1_000_000
        stream = ffmpeg.input(str(source))["a:0"]
    command: list[str] = ffmpeg.output(stream, str(target), **args).global_args(
        "-hide_banner", "-nostdin", "-loglevel", "error").overwrite_output().compile()
    return command


@dataclass(frozen=True)
class Box:
    type: str
    start: int  # offset of the box header in the buffer
    end: int
    header: int  # 8, or 16 for a 64-bit size

    @property
    def body(self) -> int:
        return self.start + self.header


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[Box]:
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        if end - pos < 8:
            raise CmafError(f"truncated box header at byte {pos}")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise CmafError(f"box {kind!r} at byte {pos} claims {size} bytes; only {end - pos} remain")
        yield Box(kind.decode("latin-1"), pos, pos + size, header)
        pos += size


def child(data: bytes, parent: Box, kind: str) -> Box | None:
    return next((b for b in boxes(data, parent.body, parent.end) if b.type == kind), None)


def path(data: bytes, parent: Box, *kinds: str) -> Box | None:
    box: Box | None = parent
    for kind in kinds:
        box = child(data, box, kind) if box is not None else None
    return box


@dataclass(frozen=True)
class Segment:
    number: int  # 1-based
    start: int  # byte range in the fragmented file
    end: int
    decode_time: int  # tfdt, in the track's timescale
    duration: int
    first_sample_end: int  # bytes from the segment start through the first sample (an I-frame playlist range)


@dataclass(frozen=True)
class Track:
    timescale: int
    handler: str  # vide | soun
    sample_entry: str  # avc1, hvc1, av01, mp4a, encv, ...
    codecs: str  # RFC 6381, for manifests
    init_end: int  # the init segment is bytes [0, init_end)
    segments: list[Segment]

    @property
    def duration(self) -> int:
        return sum(s.duration for s in self.segments)


def _full_box(data: bytes, box: Box) -> tuple[int, int]:
    version_flags: int = struct.unpack_from(">I", data, box.body)[0]
    return version_flags >> 24, version_flags & 0xFFFFFF


def _timescale(data: bytes, moov: Box) -> tuple[int, str, Box]:
    trak = child(data, moov, "trak")
    mdhd = path(data, moov, "trak", "mdia", "mdhd")
    hdlr = path(data, moov, "trak", "mdia", "hdlr")
    stsd = path(data, moov, "trak", "mdia", "minf", "stbl", "stsd")
    if trak is None or mdhd is None or hdlr is None or stsd is None:
        raise CmafError("moov has no track with mdhd, hdlr and stsd")
    if sum(1 for b in boxes(data, moov.body, moov.end) if b.type == "trak") != 1:
        raise CmafError("a CMAF track file must hold exactly one track")
    version, _ = _full_box(data, mdhd)
    timescale: int = struct.unpack_from(">I", data, mdhd.body + (20 if version == 1 else 12))[0]
    handler = data[hdlr.body + 8:hdlr.body + 12].decode("latin-1")
    return timescale, handler, stsd


def _trex_defaults(data: bytes, moov: Box) -> tuple[int, int]:
    trex = path(data, moov, "mvex", "trex")
    if trex is None:
        return 0, 0
    # version/flags, track_ID, default_sample_description_index, duration, size, flags
    duration, size = struct.unpack_from(">II", data, trex.body + 12)
    return duration, size


# The sample entry header before child boxes: 8 (SampleEntry) + 70 (visual) or + 20 (audio).
_ENTRY_HEADER = {"vide": 78, "soun": 28}


def _codecs(data: bytes, stsd: Box, handler: str) -> tuple[str, str]:
    entry = next(boxes(data, stsd.body + 8, stsd.end), None)
    if entry is None:
        raise CmafError("stsd holds no sample entry")
    kind = entry.type
    children_start = entry.body + _ENTRY_HEADER.get(handler, 0)
    config = {b.type: b for b in boxes(data, children_start, entry.end)} if handler in _ENTRY_HEADER else {}
    if kind in ("encv", "enca") and "sinf" in config:
        frma = child(data, config["sinf"], "frma")
        if frma is not None:
            kind = data[frma.body:frma.body + 4].decode("latin-1")
    if kind in ("avc1", "avc3") and "avcC" in config:
        profile, compat, level = data[config["avcC"].body + 1:config["avcC"].body + 4]
        return entry.type, f"{kind}.{profile:02x}{compat:02x}{level:02x}"
    if kind in ("hvc1", "hev1") and "hvcC" in config:
        return entry.type, _hevc_codecs(kind, data[config["hvcC"].body:config["hvcC"].end])
    if kind == "av01" and "av1C" in config:
        return entry.type, _av1_codecs(data[config["av1C"].body:config["av1C"].end])
    if kind == "mp4a":
        return entry.type, "mp4a.40.2"  # the transcoder writes AAC-LC
    return entry.type, kind


def _hevc_codecs(kind: str, hvcc: bytes) -> str:
    general = hvcc[1]
    space = "ABC"[(general >> 6) - 1] if general >> 6 else ""
    tier = "H" if general & 0x20 else "L"
    compat = int.from_bytes(hvcc[2:6], "big")
    reversed_compat = int(f"{compat:032b}"[::-1], 2)  # RFC 6381 (ISO 14496-15 E.3) writes it bit-reversed
    constraints = list(hvcc[6:12])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    parts = [kind, f"{space}{general & 0x1F}", f"{reversed_compat:X}", f"{tier}{hvcc[12]}"]
    parts += [f"{b:X}" for b in constraints]
    return ".".join(parts)


def _av1_codecs(av1c: bytes) -> str:
    profile = av1c[1] >> 5
    level = av1c[1] & 0x1F
    tier = "H" if av1c[2] & 0x80 else "M"
    high_bitdepth, twelve_bit = av1c[2] & 0x40, av1c[2] & 0x20
    depth = 12 if twelve_bit else 10 if high_bitdepth else 8
    return f"av01.{profile}.{level:02d}{tier}.{depth:02d}"


def _segment(moof: bytes, header: int, number: int, start: int, mdat_end: int,
             defaults: tuple[int, int]) -> Segment:
    """One segment from its moof's bytes; start is where the segment begins in the file, mdat_end its
    mdat's end."""
    whole = Box("moof", 0, len(moof), header)
    traf = child(moof, whole, "traf")
    tfhd = child(moof, traf, "tfhd") if traf else None
    trun = child(moof, traf, "trun") if traf else None
    if traf is None or tfhd is None or trun is None:
        raise CmafError(f"fragment {number} has no traf with tfhd and trun")
    tfdt = child(moof, traf, "tfdt")
    decode_time = 0
    if tfdt is not None:
        version, _ = _full_box(moof, tfdt)
        decode_time = struct.unpack_from(">Q" if version == 1 else ">I", moof, tfdt.body + 4)[0]

    default_duration, default_size = defaults
    _, flags = _full_box(moof, tfhd)
    pos = tfhd.body + 8  # after version/flags and track_ID
    if flags & 0x01:
        pos += 8  # base_data_offset
    if flags & 0x02:
        pos += 4  # sample_description_index
    if flags & 0x08:
        (default_duration,) = struct.unpack_from(">I", moof, pos)
        pos += 4
    if flags & 0x10:
        (default_size,) = struct.unpack_from(">I", moof, pos)

    _, flags = _full_box(moof, trun)
    (count,) = struct.unpack_from(">I", moof, trun.body + 4)
    pos = trun.body + 8
    data_offset = 0
    if flags & 0x001:
        (data_offset,) = struct.unpack_from(">i", moof, pos)
        pos += 4
    if flags & 0x004:
        pos += 4
    duration, first_size = 0, 0
    for index in range(count):
        sample_duration, sample_size = default_duration, default_size
        if flags & 0x100:
            (sample_duration,) = struct.unpack_from(">I", moof, pos)
            pos += 4
        if flags & 0x200:
            (sample_size,) = struct.unpack_from(">I", moof, pos)
            pos += 4
        pos += 4 * bool(flags & 0x400) + 4 * bool(flags & 0x800)
        duration += sample_duration
        if index == 0:
            first_size = sample_size
    # With default-base-is-moof the data offset counts from the moof's first byte.
    first_end = data_offset + first_size if data_offset else len(moof) + 8 + first_size
    return Segment(number, start, mdat_end, decode_time, duration, first_end)


# Boxes read whole while walking a file: the init's and each fragment's metadata, never media data.
# A moov or moof larger than this is not what the remux writes (an mdat is skipped, never read).
MAX_METADATA_BOX = 64 * 1024 * 1024
COPY_CHUNK = 1024 * 1024


def _top_level(stream: BinaryIO, total: int) -> Iterator[tuple[str, int, int, int]]:
    """(type, start, end, header) of each top-level box, reading only box headers; the stream is left
    just after the header, so a caller may read the body or not (the next step seeks past it)."""
    pos = 0
    while pos < total:
        stream.seek(pos)
        head = stream.read(8)
        if len(head) < 8:
            raise CmafError(f"truncated box header at byte {pos}")
        size, kind = struct.unpack(">I4s", head)
        header = 8
        if size == 1:
            large = stream.read(8)
            if len(large) < 8:
                raise CmafError(f"truncated box header at byte {pos}")
            (size,) = struct.unpack(">Q", large)
            header = 16
        elif size == 0:
            size = total - pos
        if size < header or pos + size > total:
            raise CmafError(f"box {kind!r} at byte {pos} claims {size} bytes; only {total - pos} remain")
        yield kind.decode("latin-1"), pos, pos + size, header
        pos += size


def _read_box(stream: BinaryIO, kind: str, start: int, end: int) -> bytes:
    if end - start > MAX_METADATA_BOX:
        raise CmafError(f"{kind} box at byte {start} is {end - start} bytes; over {MAX_METADATA_BOX}")
    stream.seek(start)
    data = stream.read(end - start)
    if len(data) != end - start:
        raise CmafError(f"truncated {kind} box at byte {start}")
    return data


def scan_track(stream: BinaryIO, total: int) -> Track:
    """The init segment's extent, codec and timescale, and every moof+mdat pair as one segment,
    reading the moov and each moof but seeking over media data: memory does not grow with the file."""
    moov: bytes | None = None
    init_end = 0
    segments: list[Segment] = []
    defaults = (0, 0)
    pending: tuple[bytes, int, int, int] | None = None  # a moof's bytes, header, offset; its segment's start
    styp_start: int | None = None  # an styp before a moof belongs to its segment
    moov_header = 8
    for kind, start, end, header in _top_level(stream, total):
        if kind == "moov":
            moov, moov_header = _read_box(stream, kind, start, end), header
            defaults = _trex_defaults(moov, Box("moov", 0, len(moov), header))
            init_end = end
        elif kind == "styp":
            styp_start = start
        elif kind == "moof":
            begins = styp_start if styp_start is not None else start
            pending = (_read_box(stream, kind, start, end), header, start, begins)
        elif kind == "mdat" and pending is not None:
            moof, moof_header, moof_start, begins = pending
            segment = _segment(moof, moof_header, len(segments) + 1, begins, end, defaults)
            if begins != moof_start:  # an styp sits between the segment start and its moof
                segment = Segment(segment.number, begins, end, segment.decode_time, segment.duration,
                                  segment.first_sample_end + moof_start - begins)
            segments.append(segment)
            pending, styp_start = None, None
    if moov is None:
        raise CmafError("no moov box: not an MP4 file")
    whole = Box("moov", 0, len(moov), moov_header)
    timescale, handler, stsd = _timescale(moov, whole)
    entry, codecs = _codecs(moov, stsd, handler)
    if not segments:
        raise CmafError("no movie fragments: the file is not fragmented")
    return Track(timescale, handler, entry, codecs, init_end, segments)


def read_track(data: bytes) -> Track:
    """scan_track over bytes already in memory."""
    return scan_track(io.BytesIO(data), len(data))


def copy_range(source: BinaryIO, target: Path, start: int, end: int) -> None:
    """Bytes [start, end) of source into a new file: in the kernel (copy_file_range) where it can,
    else COPY_CHUNK at a time; memory never holds more than a chunk."""
    with open(target, "wb") as out:
        offset = start
        try:
            while offset < end:
                copied = os.copy_file_range(source.fileno(), out.fileno(), end - offset, offset)
                if copied == 0:
                    raise CmafError(f"the file ended {end - offset} bytes before byte {end}")
                offset += copied
            return
        except (OSError, AttributeError, io.UnsupportedOperation):
            pass  # another filesystem, an old kernel or an in-memory stream: copy through a buffer
        source.seek(offset)
        while offset < end:
            chunk = source.read(min(COPY_CHUNK, end - offset))
            if not chunk:
                raise CmafError(f"the file ended {end - offset} bytes before byte {end}")
            out.write(chunk)
            offset += len(chunk)
