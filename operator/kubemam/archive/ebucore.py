"""The EBUCore sidecar (EBU Tech 3293, namespace urn:ebu:metadata-schema:ebucore) written beside the master.

Pure: the document in, bytes out, and back. No clock (generated_at is passed in) and no I/O, so the
planner can build the sidecar and compare it with what storage holds to keep every copy current.

Mapping (everything under ebuCoreMain/coreMetadata):
- title/dc:title; alternativeTitle[@typeLabel=original|series]; subject[@typeLabel=keyword];
  description[@typeLabel=synopsis]; contributor (contactDetails/name, role/@typeLabel); date/created/@startYear;
  type/genre/@typeLabel; type/targetAudience/@typeLabel (content rating); language[@typeLabel=main];
  isEpisodeOf and isMemberOf[@typeLabel=season] with @runningOrderNumber; identifier[@typeLabel=MediaAsset|uid].
- format[@typeLabel=master]: videoFormat (width, height, frameRate, videoEncoding, scanning), audioFormat per
  stream, containerFormat, timecodeFormat (the timeline), start, duration/normalPlayTime, fileSize, hash,
  overallBitRate. Values EBUCore has no element for ride as technicalAttribute* with a typeLabel.
- format[@typeLabel=file] per checksum: fileName and hash (hashValue, hashFunction/@typeLabel).
- rights[@typeLabel=licence] per window: coverage/temporal/PeriodOfTime, coverage/spatial/location per
  territory, coverage[@typeLabel=channel]/dc:coverage per channel.
- part per marker: @partName, @typeLabel (kind), description (note), partStartTime and partEndTime as timecode.

Output is deterministic: sets (territories, channels, windows, checksums) are sorted when the document is
made; lists whose order means something (markers, contributors, genres, audio streams) keep it.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from math import isfinite
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kubemam.api.asset import (
    AudioStream,
    Contributor,
    DescriptiveMetadata,
    Marker,
    TechnicalMetadata,
    Timeline,
    VideoStream,
)
from kubemam.api.common import DNS_LABEL, DNS_SUBDOMAIN

EBUCORE_NS = "urn:ebu:metadata-schema:ebucore"
DC_NS = "http://purl.org/dc/elements/1.1/"
SCHEMA_VERSION = "1.10"

_E = f"{{{EBUCORE_NS}}}"
_D = f"{{{DC_NS}}}"
HashAlgorithm = Literal["sha256", "md5"]
_HASH_FUNCTIONS: dict[HashAlgorithm, str] = {"sha256": "SHA-256", "md5": "MD5"}
# XML 1.0 has no way to write these characters at all, escaped or not.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NPT = re.compile(r"^PT(\d+(\.\d+)?)S$")


class RightsSummary(BaseModel):
    """One licence window as the archive records it: when, where and on which channels."""

    model_config = ConfigDict(extra="forbid")

    window: str = Field(min_length=1, max_length=253)
    start: AwareDatetime
    end: AwareDatetime
    territories: list[str] = Field(min_length=1)
    channels: list[str] = Field(min_length=1)

    @field_validator("territories", "channels")
    @classmethod
    def _as_set(cls, value: list[str]) -> list[str]:
        return sorted(set(value))


class FileChecksum(BaseModel):
    """The fixity value of one file of the archived set (the master, a rendition, ...)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=1024, description="Key of the file beside the sidecar")
    algorithm: HashAlgorithm = "sha256"
    value: str = Field(pattern=r"^[0-9a-f]{32}([0-9a-f]{32})?$")

    @model_validator(mode="after")
    def _length_fits(self) -> FileChecksum:
        if len(self.value) != (64 if self.algorithm == "sha256" else 32):
            raise ValueError(f"{self.name}: a {self.algorithm} value has {64 if self.algorithm == 'sha256' else 32} "
                             "hex digits")
        return self


class SidecarDocument(BaseModel):
    """Everything the sidecar says about one asset."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(max_length=63, pattern=DNS_LABEL)
    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN)
    uid: str = Field(min_length=1, max_length=128)
    descriptive: DescriptiveMetadata
    technical: TechnicalMetadata = Field(default_factory=TechnicalMetadata)
    timeline: Timeline = Field(default_factory=Timeline)
    markers: list[Marker] = Field(default_factory=list)
    rights: list[RightsSummary] = Field(default_factory=list)
    checksums: list[FileChecksum] = Field(default_factory=list)
    generated_at: AwareDatetime

    # An empty list and no list say the same in XML; keep one form so a parsed document equals its source.
    @field_validator("descriptive")
    @classmethod
    def _no_empty_lists(cls, value: DescriptiveMetadata) -> DescriptiveMetadata:
        return value.model_copy(update={k: getattr(value, k) or None for k in ("genres", "contributors", "keywords")})

    @field_validator("technical")
    @classmethod
    def _no_empty_audio(cls, value: TechnicalMetadata) -> TechnicalMetadata:
        return value.model_copy(update={"audio": value.audio or None})

    @field_validator("rights")
    @classmethod
    def _windows_in_time_order(cls, value: list[RightsSummary]) -> list[RightsSummary]:
        return sorted(value, key=lambda r: (r.start, r.end, r.window))

    @field_validator("checksums")
    @classmethod
    def _checksums_by_name(cls, value: list[FileChecksum]) -> list[FileChecksum]:
        return sorted(value, key=lambda c: (c.name, c.algorithm))


# --- building -------------------------------------------------------------------------------------------


def _add(parent: ET.Element, tag: str, text: str | int | None = None, **attrs: str | int | None) -> ET.Element:
    """A child element; attributes that are None are left out, so optional values vanish cleanly.
    (`xml_lang` stands for xml:lang, the one attribute name a keyword cannot spell.)"""
    child = ET.SubElement(parent, tag, {k.replace("xml_lang", "xml:lang"): str(v) for k, v in attrs.items()
                                        if v is not None})
    if text is not None:
        child.text = str(text)
    return child


def _instant(value: datetime) -> tuple[str, str]:
    """(xs:date, xs:time) in UTC: one instant, one spelling."""
    utc = value.astimezone(UTC)
    return utc.date().isoformat(), utc.time().isoformat() + "Z"


def _decimal(value: float) -> str:
    """The shortest decimal that reads back as the same float, without an exponent (xs:duration has none)."""
    if not isfinite(value):
        raise ValueError(f"{value} is not a duration")
    return format(Decimal(repr(value)), "f")


def _frame_rate(rate: str | None) -> tuple[int, int, int] | None:
    """EBUCore's rational: an integer rate and a correcting factor (30 × 1000/1001 for 29.97)."""
    try:
        exact = Fraction(rate) if rate else None
    except (ValueError, ZeroDivisionError):
        return None
    if exact is None or exact <= 0:
        return None
    value = max(1, round(exact))
    factor = exact / value
    return value, factor.numerator, factor.denominator


def _technical_attributes(parent: ET.Element, strings: dict[str, str | None], integers: dict[str, int | None],
                          booleans: dict[str, bool | None]) -> None:
    # The schema's sequence: every technicalAttributeString, then Integer, then Boolean.
    for label, text in strings.items():
        if text is not None:
            _add(parent, "ebucore:technicalAttributeString", text, typeLabel=label)
    for label, number in integers.items():
        if number is not None:
            _add(parent, "ebucore:technicalAttributeInteger", number, typeLabel=label)
    for label, flag in booleans.items():
        if flag is not None:
            _add(parent, "ebucore:technicalAttributeBoolean", "true" if flag else "false", typeLabel=label)


def _hash(parent: ET.Element, algorithm: HashAlgorithm, value: str) -> None:
    digest = _add(parent, "ebucore:hash")
    _add(digest, "ebucore:hashValue", value)
    _add(digest, "ebucore:hashFunction", typeLabel=_HASH_FUNCTIONS[algorithm])


def _video_format(parent: ET.Element, video: VideoStream) -> None:
    element = _add(parent, "ebucore:videoFormat", videoFormatName=video.codec, videoFormatProfile=video.profile)
    _add(element, "ebucore:width", video.width, unit="pixel")
    _add(element, "ebucore:height", video.height, unit="pixel")
    rational = _frame_rate(video.frame_rate)
    if rational is not None:
        _add(element, "ebucore:frameRate", rational[0], factorNumerator=rational[1], factorDenominator=rational[2])
    _add(element, "ebucore:videoEncoding", typeLabel=video.codec, videoEncodingProfile=video.profile)
    # For tools that read scanning only; the exact ffprobe field order rides as a technical attribute.
    scanning = {"progressive": ("progressive", None), "tt": ("interlaced", "top"), "tb": ("interlaced", "top"),
                "bb": ("interlaced", "bottom"), "bt": ("interlaced", "bottom")}.get(video.field_order or "")
    if scanning is not None:
        _add(element, "ebucore:scanningFormat", scanning[0])
        if scanning[1]:
            _add(element, "ebucore:scanningOrder", scanning[1])
    _technical_attributes(element, {"frameRate": video.frame_rate, "pixelFormat": video.pixel_format,
                                    "colorPrimaries": video.color_primaries, "colorTransfer": video.color_transfer,
                                    "colorSpace": video.color_space, "fieldOrder": video.field_order},
                          {"bitDepth": video.bit_depth}, {})


def _audio_format(parent: ET.Element, audio: AudioStream) -> None:
    element = _add(parent, "ebucore:audioFormat", audioFormatName=audio.codec)
    _add(element, "ebucore:audioEncoding", typeLabel=audio.codec)
    if audio.channel_layout is not None:
        _add(element, "ebucore:audioTrackConfiguration", typeLabel=audio.channel_layout)
    if audio.sample_rate is not None:
        _add(element, "ebucore:samplingRate", audio.sample_rate)
    _add(element, "ebucore:audioTrack", trackId=audio.index, trackLanguage=audio.language)
    _add(element, "ebucore:channels", audio.channels)


def _master_format(parent: ET.Element, technical: TechnicalMetadata, timeline: Timeline) -> None:
    element = _add(parent, "ebucore:format", typeLabel="master")
    if technical.video is not None:
        _video_format(element, technical.video)
    for audio in technical.audio or []:
        _audio_format(element, audio)
    if technical.container is not None:
        _add(element, "ebucore:containerFormat", containerFormatName=technical.container)
    timecode = _add(element, "ebucore:timecodeFormat")
    _add(_add(timecode, "ebucore:timecodeStart", typeLabel="timeline"), "ebucore:timecode", timeline.start_timecode)
    _technical_attributes(timecode, {"frameRate": timeline.frame_rate}, {}, {"dropFrame": timeline.drop_frame})
    if technical.start_timecode is not None:
        _add(_add(element, "ebucore:start", typeLabel="master"), "ebucore:timecode", technical.start_timecode)
    if technical.duration_seconds is not None:
        _add(_add(element, "ebucore:duration"), "ebucore:normalPlayTime", f"PT{_decimal(technical.duration_seconds)}S")
    if technical.size_bytes is not None:
        _add(element, "ebucore:fileSize", technical.size_bytes, unit="byte")
    if technical.sha256 is not None:
        _hash(element, "sha256", technical.sha256)
    if technical.bit_rate is not None:
        _add(element, "ebucore:overallBitRate", technical.bit_rate, unit="bps")


def _rights(parent: ET.Element, rights: RightsSummary) -> None:
    element = _add(parent, "ebucore:rights", typeLabel="licence", rightsID=rights.window)
    # A sentence for people; parse_sidecar reads the structured coverage below, not this.
    start_date, start_time = _instant(rights.start)
    end_date, end_time = _instant(rights.end)
    _add(element, "dc:rights", f"Licensed in {', '.join(rights.territories)} on {', '.join(rights.channels)} "
                               f"from {start_date}T{start_time} to {end_date}T{end_time}")
    coverage = _add(element, "ebucore:coverage", typeLabel="window")
    _add(_add(coverage, "ebucore:temporal", typeLabel="availability"), "ebucore:PeriodOfTime",
         startDate=start_date, startTime=start_time, endDate=end_date, endTime=end_time)
    spatial = _add(coverage, "ebucore:spatial")
    for territory in rights.territories:
        _add(_add(spatial, "ebucore:location", typeLabel="territory"), "ebucore:name", territory)
    for channel in rights.channels:
        _add(_add(element, "ebucore:coverage", typeLabel="channel"), "dc:coverage", channel)


def _part(parent: ET.Element, number: int, marker: Marker) -> None:
    element = _add(parent, "ebucore:part", partName=marker.name, partNumber=number, typeLabel=marker.kind)
    if marker.note is not None:
        _add(_add(element, "ebucore:description", typeLabel="note"), "dc:description", marker.note)
    _add(_add(element, "ebucore:partStartTime"), "ebucore:timecode", marker.start)
    if marker.end is not None:
        _add(_add(element, "ebucore:partEndTime"), "ebucore:timecode", marker.end)


def build_sidecar(doc: SidecarDocument) -> bytes:
    """The sidecar's bytes: UTF-8 with an XML declaration; the same document always gives the same bytes."""
    date, time = _instant(doc.generated_at)
    root = ET.Element("ebucore:ebuCoreMain", {"xmlns:ebucore": EBUCORE_NS, "xmlns:dc": DC_NS,
                                              "version": SCHEMA_VERSION, "dateLastModified": date,
                                              "timeLastModified": time, "writingLibraryName": "kubemam"})
    core = _add(root, "ebucore:coreMetadata")
    meta = doc.descriptive
    # The elements follow coreMetadataType's sequence order.
    _add(_add(core, "ebucore:title", typeLabel="main"), "dc:title", meta.title, xml_lang=meta.language)
    for label, alternative in (("original", meta.original_title), ("series", meta.series)):
        if alternative is not None:
            _add(_add(core, "ebucore:alternativeTitle", typeLabel=label), "dc:title", alternative)
    for keyword in meta.keywords or []:
        _add(_add(core, "ebucore:subject", typeLabel="keyword"), "dc:subject", keyword)
    if meta.synopsis is not None:
        _add(_add(core, "ebucore:description", typeLabel="synopsis"), "dc:description", meta.synopsis,
             xml_lang=meta.language)
    # EBUCore: "If in doubt whether an entity is a creator or contributor use the element contributor";
    # one element keeps the credits in their order.
    for person in meta.contributors or []:
        contributor = _add(core, "ebucore:contributor")
        _add(_add(contributor, "ebucore:contactDetails"), "ebucore:name", person.name)
        _add(contributor, "ebucore:role", typeLabel=person.role)
    if meta.production_year is not None:
        _add(_add(core, "ebucore:date"), "ebucore:created", startYear=meta.production_year)
    if meta.genres or meta.content_rating is not None:
        kind = _add(core, "ebucore:type")
        for genre in meta.genres or []:
            _add(kind, "ebucore:genre", typeLabel=genre)
        if meta.content_rating is not None:
            _add(kind, "ebucore:targetAudience", typeLabel=meta.content_rating)
    _master_format(core, doc.technical, doc.timeline)
    for checksum in doc.checksums:
        file = _add(core, "ebucore:format", typeLabel="file")
        _add(file, "ebucore:fileName", checksum.name)
        _hash(file, checksum.algorithm, checksum.value)
    _add(_add(core, "ebucore:identifier", typeLabel="MediaAsset"), "dc:identifier", f"{doc.namespace}/{doc.name}")
    _add(_add(core, "ebucore:identifier", typeLabel="uid"), "dc:identifier", doc.uid)
    if meta.language is not None:
        _add(_add(core, "ebucore:language", typeLabel="main"), "dc:language", meta.language)
    if meta.episode is not None:
        _add(_add(core, "ebucore:isEpisodeOf", typeLabel="series", runningOrderNumber=meta.episode),
             "dc:relation", meta.series or "")
    if meta.season is not None:
        _add(_add(core, "ebucore:isMemberOf", typeLabel="season", runningOrderNumber=meta.season),
             "dc:relation", meta.series or "")
    for rights in doc.rights:
        _rights(core, rights)
    for number, marker in enumerate(doc.markers, start=1):
        _part(core, number, marker)
    lines = ["<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"]
    _serialize(root, 0, lines)
    return "".join(lines).encode("utf-8")


def _escape(text: str, attribute: bool) -> str:
    bad = _NOT_XML.search(text)
    if bad:
        raise ValueError(f"{text[:40]!r} holds {bad.group()!r}, which XML 1.0 cannot carry")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    if attribute:
        # Parsers turn raw tabs and newlines in attributes into spaces; character references survive.
        text = text.replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")
    return text


def _serialize(element: ET.Element, depth: int, out: list[str]) -> None:
    """Indented XML. Hand-written because ElementTree passes a carriage return in text through raw, and a
    parser reads it back as a newline."""
    pad = "  " * depth
    attrs = "".join(f' {key}="{_escape(value, True)}"' for key, value in element.attrib.items())
    if len(element):
        out.append(f"{pad}<{element.tag}{attrs}>\n")
        for child in element:
            _serialize(child, depth + 1, out)
        out.append(f"{pad}</{element.tag}>\n")
    elif element.text is not None:
        out.append(f"{pad}<{element.tag}{attrs}>{_escape(element.text, False)}</{element.tag}>\n")
    else:
        out.append(f"{pad}<{element.tag}{attrs}/>\n")


# --- parsing --------------------------------------------------------------------------------------------


def _find(parent: ET.Element, tag: str, what: str) -> ET.Element:
    found = parent.find(tag)
    if found is None:
        raise ValueError(f"the sidecar has no {what}")
    return found


def _children(parent: ET.Element, tag: str, label: str | None = None) -> list[ET.Element]:
    return [e for e in parent.findall(tag) if label is None or e.get("typeLabel") == label]


def _text(element: ET.Element | None) -> str | None:
    return None if element is None else (element.text or "")


def _int(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} is not an integer: {text!r}") from None


def _attributes(element: ET.Element) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    def read(kind: str) -> dict[str, str]:
        return {e.get("typeLabel") or "": e.text or "" for e in element.findall(f"{_E}technicalAttribute{kind}")}
    return read("String"), read("Integer"), read("Boolean")


def _boolean(text: str, what: str) -> bool:
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"{what} is not a boolean: {text!r}")


def _datetime(date: str | None, time: str | None, what: str) -> datetime:
    if not date or not time:
        raise ValueError(f"{what} needs a date and a time")
    try:
        return datetime.fromisoformat(f"{date}T{time}")
    except ValueError:
        raise ValueError(f"{what} is not a date and time: {date!r} {time!r}") from None


def _parse_video(element: ET.Element) -> VideoStream:
    strings, integers, _ = _attributes(element)
    return VideoStream(
        codec=_find(element, f"{_E}videoEncoding", "videoEncoding").get("typeLabel") or "unknown",
        profile=element.get("videoFormatProfile"),
        width=_int(_text(_find(element, f"{_E}width", "video width")), "width") or 0,
        height=_int(_text(_find(element, f"{_E}height", "video height")), "height") or 0,
        frame_rate=strings.get("frameRate"),
        pixel_format=strings.get("pixelFormat"),
        bit_depth=_int(integers.get("bitDepth"), "bitDepth"),
        color_primaries=strings.get("colorPrimaries"),
        color_transfer=strings.get("colorTransfer"),
        color_space=strings.get("colorSpace"),
        field_order=strings.get("fieldOrder"),
    )


def _parse_audio(element: ET.Element) -> AudioStream:
    track = _find(element, f"{_E}audioTrack", "audioTrack")
    configuration = element.find(f"{_E}audioTrackConfiguration")
    return AudioStream(
        index=_int(track.get("trackId"), "audioTrack trackId") or 0,
        codec=_find(element, f"{_E}audioEncoding", "audioEncoding").get("typeLabel") or "unknown",
        channels=_int(_text(element.find(f"{_E}channels")), "channels") or 0,
        channel_layout=None if configuration is None else configuration.get("typeLabel"),
        sample_rate=_int(_text(element.find(f"{_E}samplingRate")), "samplingRate"),
        language=track.get("trackLanguage"),
    )


def _parse_hash(element: ET.Element, what: str) -> tuple[HashAlgorithm, str]:
    function = _find(element, f"{_E}hashFunction", f"hashFunction for {what}").get("typeLabel")
    algorithm = next((k for k, v in _HASH_FUNCTIONS.items() if v == function), None)
    if algorithm is None:
        raise ValueError(f"{what}: hash function {function!r} is not one of {', '.join(_HASH_FUNCTIONS.values())}")
    return algorithm, _text(_find(element, f"{_E}hashValue", f"hashValue for {what}")) or ""


def _parse_master(core: ET.Element) -> tuple[TechnicalMetadata, Timeline]:
    masters = _children(core, f"{_E}format", "master")
    if len(masters) != 1:
        raise ValueError(f"the sidecar needs one format with typeLabel 'master', it has {len(masters)}")
    element = masters[0]
    video = element.find(f"{_E}videoFormat")
    container = element.find(f"{_E}containerFormat")
    duration = _text(element.find(f"{_E}duration/{_E}normalPlayTime"))
    npt = _NPT.match(duration) if duration is not None else None
    if duration is not None and npt is None:
        raise ValueError(f"duration {duration!r} is not PT<seconds>S")
    digest = element.find(f"{_E}hash")
    sha256 = None
    if digest is not None:
        algorithm, sha256 = _parse_hash(digest, "the master")
        if algorithm != "sha256":
            raise ValueError(f"the master's hash is {algorithm}; the archive records sha256")
    technical = TechnicalMetadata(
        container=None if container is None else container.get("containerFormatName"),
        duration_seconds=float(npt.group(1)) if npt else None,
        size_bytes=_int(_text(element.find(f"{_E}fileSize")), "fileSize"),
        sha256=sha256,
        bit_rate=_int(_text(element.find(f"{_E}overallBitRate")), "overallBitRate"),
        start_timecode=_text(element.find(f"{_E}start/{_E}timecode")),
        video=None if video is None else _parse_video(video),
        audio=[_parse_audio(a) for a in element.findall(f"{_E}audioFormat")] or None,
    )
    timecode = _find(element, f"{_E}timecodeFormat", "timecodeFormat (the timeline)")
    strings, _, booleans = _attributes(timecode)
    timeline = Timeline.model_validate({
        "frame_rate": strings.get("frameRate", "25"),
        "drop_frame": _boolean(booleans.get("dropFrame", "false"), "dropFrame"),
        "start_timecode": _text(timecode.find(f"{_E}timecodeStart/{_E}timecode")) or "00:00:00:00",
    })
    return technical, timeline


def _parse_file(element: ET.Element) -> FileChecksum:
    name = _text(element.find(f"{_E}fileName")) or ""
    algorithm, value = _parse_hash(_find(element, f"{_E}hash", f"hash of file {name!r}"), f"file {name!r}")
    return FileChecksum(name=name, algorithm=algorithm, value=value)


def _parse_rights(element: ET.Element) -> RightsSummary:
    window = element.get("rightsID") or ""
    period = _find(element, f"{_E}coverage/{_E}temporal/{_E}PeriodOfTime", f"period for licence {window!r}")
    return RightsSummary(
        window=window,
        start=_datetime(period.get("startDate"), period.get("startTime"), f"licence {window!r} start"),
        end=_datetime(period.get("endDate"), period.get("endTime"), f"licence {window!r} end"),
        territories=[_text(n) or "" for n in element.findall(
            f"{_E}coverage/{_E}spatial/{_E}location[@typeLabel='territory']/{_E}name")],
        channels=[_text(c.find(f"{_D}coverage")) or "" for c in _children(element, f"{_E}coverage", "channel")],
    )


def _parse_part(element: ET.Element) -> Marker:
    return Marker.model_validate({
        "name": element.get("partName"),
        "kind": element.get("typeLabel"),
        "start": _text(_find(element, f"{_E}partStartTime/{_E}timecode", "partStartTime of a marker")),
        "end": _text(element.find(f"{_E}partEndTime/{_E}timecode")),
        "note": _text(element.find(f"{_E}description[@typeLabel='note']/{_D}description")),
    })


def _identity(core: ET.Element) -> tuple[str, str, str]:
    reference = _text(core.find(f"{_E}identifier[@typeLabel='MediaAsset']/{_D}identifier"))
    uid = _text(core.find(f"{_E}identifier[@typeLabel='uid']/{_D}identifier"))
    if not reference or "/" not in reference or not uid:
        raise ValueError("the sidecar does not identify its asset (identifier MediaAsset namespace/name and uid)")
    namespace, _, name = reference.partition("/")
    return namespace, name, uid


def _parse_contributor(element: ET.Element) -> Contributor:
    role = element.find(f"{_E}role")
    return Contributor(name=_text(element.find(f"{_E}contactDetails/{_E}name")) or "",
                       role=(role.get("typeLabel") if role is not None else None) or "")


def _parse_descriptive(core: ET.Element) -> DescriptiveMetadata:
    def alternative(label: str) -> str | None:
        return _text(core.find(f"{_E}alternativeTitle[@typeLabel='{label}']/{_D}title"))

    def running_order(tag: str, label: str) -> int | None:
        element = core.find(f"{_E}{tag}[@typeLabel='{label}']")
        return None if element is None else _int(element.get("runningOrderNumber"), f"{tag} runningOrderNumber")

    year = core.find(f"{_E}date/{_E}created")
    rating = core.find(f"{_E}type/{_E}targetAudience")
    return DescriptiveMetadata.model_validate({
        "title": _text(_find(core, f"{_E}title/{_D}title", "title/dc:title")),
        "original_title": alternative("original"),
        "series": alternative("series"),
        "synopsis": _text(core.find(f"{_E}description[@typeLabel='synopsis']/{_D}description")),
        "season": running_order("isMemberOf", "season"),
        "episode": running_order("isEpisodeOf", "series"),
        "genres": [g.get("typeLabel") for g in core.findall(f"{_E}type/{_E}genre")] or None,
        "language": _text(core.find(f"{_E}language[@typeLabel='main']/{_D}language")),
        "production_year": None if year is None else _int(year.get("startYear"), "date/created startYear"),
        "content_rating": None if rating is None else rating.get("typeLabel"),
        "contributors": [_parse_contributor(c) for c in core.findall(f"{_E}contributor")] or None,
        "keywords": [_text(s.find(f"{_D}subject")) or "" for s in _children(core, f"{_E}subject", "keyword")] or None,
    })


def parse_sidecar(xml: bytes) -> SidecarDocument:
    """The document a sidecar carries; foreign or damaged XML is a ValueError that says what is wrong."""
    if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        raise ValueError("the sidecar declares a DTD or entities; an EBUCore sidecar has neither")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise ValueError(f"the sidecar is not well-formed XML: {err}") from None
    if root.tag != f"{_E}ebuCoreMain":
        raise ValueError(f"not an EBUCore sidecar: the root element is {root.tag!r}, not "
                         f"{{{EBUCORE_NS}}}ebuCoreMain")
    core = _find(root, f"{_E}coreMetadata", "coreMetadata")
    try:
        namespace, name, uid = _identity(core)
        technical, timeline = _parse_master(core)
        return SidecarDocument(
            namespace=namespace, name=name, uid=uid,
            descriptive=_parse_descriptive(core),
            technical=technical,
            timeline=timeline,
            markers=[_parse_part(p) for p in core.findall(f"{_E}part")],
            rights=[_parse_rights(r) for r in _children(core, f"{_E}rights", "licence")],
            checksums=[_parse_file(f) for f in _children(core, f"{_E}format", "file")],
            generated_at=_datetime(root.get("dateLastModified"), root.get("timeLastModified"), "dateLastModified"),
        )
    except ValidationError as err:
        raise ValueError(f"the sidecar carries values the asset model refuses: {err}") from None
