"""The EBUCore sidecar: what goes in comes back out, byte for byte the same each time, in EBUCore's terms."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone

import pytest

from kubemam.api.asset import (
    AudioStream,
    Contributor,
    DescriptiveMetadata,
    Marker,
    TechnicalMetadata,
    Timeline,
    VideoStream,
)
from kubemam.archive.ebucore import (
    DC_NS,
    EBUCORE_NS,
    FileChecksum,
    RightsSummary,
    SidecarDocument,
    build_sidecar,
    parse_sidecar,
)

NS = {"ebucore": EBUCORE_NS, "dc": DC_NS}
PARIS = timezone(timedelta(hours=1))


def rich_document() -> SidecarDocument:
    """A 29.97 fps drop-frame episode in French with three audio tracks, windows on two continents."""
    return SidecarDocument(
        namespace="archive",
        name="cafe-s02e01",
        uid="6f1c2d3e-9a8b-4c7d-8e6f-5a4b3c2d1e0f",
        descriptive=DescriptiveMetadata(
            title="Café – Épisode 1 & <« Les \"Amis\" d'en face »>",
            original_title="Café: The Neighbours",
            series="Café",
            season=2,
            episode=1,
            synopsis="Une nuit à Montmartre.\r\nLine two\twith a tab & an ampersand; 東京 too.",
            genres=["Drama", "Comedy"],
            language="fr",
            production_year=2004,
            content_rating="TV-14",
            contributors=[Contributor(name="Agnès Varda", role="director"),
                          Contributor(name="Jean-Luc O'Brien", role="writer")],
            keywords=["paris", "café", "nuit"],
        ),
        technical=TechnicalMetadata(
            container="mxf", duration_seconds=1320.4536, size_bytes=12_884_901_888,
            sha256="3f" * 32, bit_rate=50_000_000, start_timecode="09:59:30;00",
            video=VideoStream(codec="mpeg2video", profile="4:2:2", width=1920, height=1080,
                              frame_rate="30000/1001", pixel_format="yuv422p", bit_depth=8,
                              color_primaries="bt709", color_transfer="bt709", color_space="bt709", field_order="tt"),
            audio=[AudioStream(index=1, codec="pcm_s24le", channels=2, channel_layout="stereo", sample_rate=48000,
                               language="fra"),
                   AudioStream(index=2, codec="pcm_s24le", channels=6, channel_layout="5.1", sample_rate=48000,
                               language="eng"),
                   AudioStream(index=3, codec="pcm_s24le", channels=1, sample_rate=48000)],
        ),
        timeline=Timeline(frame_rate="30000/1001", drop_frame=True, start_timecode="09:59:30;00"),
        markers=[
            Marker(name="bars", kind="note", start="09:59:30;00", end="09:59:59;29", note="Bars & tone"),
            Marker(name="part-1", kind="segment", start="10:00:00;00", end="10:09:59;29"),
            Marker(name="break-1", kind="adBreak", start="10:01:00;02"),
            Marker(name="rating", kind="ratingFlag", start="10:05:00;00", note="Langage <explicite>"),
        ],
        rights=[
            RightsSummary(window="svod-us", start=datetime(2025, 3, 1, tzinfo=UTC),
                          end=datetime(2026, 3, 1, tzinfo=UTC), territories=["US", "CA"], channels=["svod"]),
            RightsSummary(window="broadcast-eu", start=datetime(2025, 1, 1, tzinfo=PARIS),
                          end=datetime(2025, 12, 31, 23, 59, 59, tzinfo=PARIS), territories=["FR", "BE", "CH"],
                          channels=["broadcast", "catchup"]),
        ],
        checksums=[FileChecksum(name="renditions/1080p/video.mp4", value="0a" * 32),
                   FileChecksum(name="master.mxf", value="3f" * 32),
                   FileChecksum(name="legacy/qc.pdf", algorithm="md5", value="9e" * 16)],
        generated_at=datetime(2025, 6, 1, 12, 30, 5, 250_000, tzinfo=UTC),
    )


def test_a_rich_document_round_trips() -> None:
    doc = rich_document()
    back = parse_sidecar(build_sidecar(doc))
    assert back == doc
    # The parts of it most likely to be mangled, checked by eye as well.
    assert back.descriptive.title == "Café – Épisode 1 & <« Les \"Amis\" d'en face »>"
    assert back.descriptive.synopsis is not None and "\r\nLine two\twith" in back.descriptive.synopsis
    assert [m.start for m in back.markers] == ["09:59:30;00", "10:00:00;00", "10:01:00;02", "10:05:00;00"]
    assert back.timeline.drop_frame and back.timeline.frame_rate == "30000/1001"
    assert [a.channels for a in back.technical.audio or []] == [2, 6, 1]
    assert back.rights[0].window == "broadcast-eu" and back.rights[0].territories == ["BE", "CH", "FR"]
    assert back.rights[0].start == datetime(2024, 12, 31, 23, 0, tzinfo=UTC)


def test_a_sparse_document_round_trips() -> None:
    doc = SidecarDocument(namespace="n", name="clip", uid="u-1", descriptive=DescriptiveMetadata(title="x"),
                          generated_at=datetime(2025, 1, 1, tzinfo=UTC))
    assert parse_sidecar(build_sidecar(doc)) == doc


def test_the_same_document_gives_the_same_bytes_and_set_order_does_not_matter() -> None:
    doc = rich_document()
    first = build_sidecar(doc)
    assert build_sidecar(rich_document()) == first
    shuffled = doc.model_copy(update={
        "rights": [RightsSummary(window=r.window, start=r.start, end=r.end, territories=r.territories[::-1],
                                 channels=r.channels[::-1]) for r in doc.rights[::-1]],
        "checksums": doc.checksums[::-1],
    })
    assert build_sidecar(SidecarDocument.model_validate(shuffled.model_dump())) == first
    # Only the document moves the bytes: a new timestamp changes them, nothing else does.
    assert build_sidecar(doc.model_copy(update={"generated_at": datetime(2025, 6, 2, tzinfo=UTC)})) != first


def test_the_xml_is_ebucore_an_archivists_tool_can_read() -> None:
    text = build_sidecar(rich_document())
    assert text.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    text.decode("utf-8")  # UTF-8 through and through
    root = ET.fromstring(text)
    assert root.tag == f"{{{EBUCORE_NS}}}ebuCoreMain"
    core = root.find("ebucore:coreMetadata", NS)
    assert core is not None
    assert core.findtext("ebucore:title/dc:title", namespaces=NS) == rich_document().descriptive.title
    master = core.find("ebucore:format[@typeLabel='master']", NS)
    assert master is not None
    assert master.findtext("ebucore:videoFormat/ebucore:width", namespaces=NS) == "1920"
    assert master.findtext("ebucore:videoFormat/ebucore:height", namespaces=NS) == "1080"
    rate = master.find("ebucore:videoFormat/ebucore:frameRate", NS)
    assert rate is not None and (rate.text, rate.get("factorNumerator"), rate.get("factorDenominator")) == (
        "30", "1000", "1001")
    assert [a.findtext("ebucore:channels", namespaces=NS) for a in master.findall("ebucore:audioFormat", NS)] == [
        "2", "6", "1"]
    assert master.findtext("ebucore:containerFormat[@containerFormatName='mxf']", namespaces=NS) is not None
    assert master.findtext("ebucore:duration/ebucore:normalPlayTime", namespaces=NS) == "PT1320.4536S"
    assert master.findtext("ebucore:fileSize", namespaces=NS) == "12884901888"
    assert master.findtext("ebucore:hash/ebucore:hashValue", namespaces=NS) == "3f" * 32
    assert master.find("ebucore:hash/ebucore:hashFunction[@typeLabel='SHA-256']", NS) is not None
    files = {f.findtext("ebucore:fileName", namespaces=NS): [h.get("typeLabel") for h in f.iterfind(
             "ebucore:hash/ebucore:hashFunction", NS)] for f in core.findall("ebucore:format[@typeLabel='file']", NS)}
    assert files == {"legacy/qc.pdf": ["MD5"], "master.mxf": ["SHA-256"], "renditions/1080p/video.mp4": ["SHA-256"]}
    part = core.find("ebucore:part[@partName='break-1']", NS)
    assert part is not None and part.get("typeLabel") == "adBreak"
    assert part.findtext("ebucore:partStartTime/ebucore:timecode", namespaces=NS) == "10:01:00;02"
    rights = core.find("ebucore:rights[@rightsID='broadcast-eu']", NS)
    assert rights is not None
    assert [n.text for n in rights.findall(".//ebucore:location/ebucore:name", NS)] == ["BE", "CH", "FR"]
    assert rights.find(".//ebucore:PeriodOfTime[@startDate='2024-12-31'][@startTime='23:00:00Z']", NS) is not None
    assert [r.tag.split("}")[1] for r in core][:3] == ["title", "alternativeTitle", "alternativeTitle"]


@pytest.mark.parametrize(("xml", "says"), [
    (b"", "not well-formed"),
    (b"<ebucore:ebuCoreMain xmlns:ebucore='urn:ebu:metadata-schema:ebucore'><ebucore:coreMetadata>",
     "not well-formed"),
    (b"<?xml version='1.0'?><mets xmlns='http://www.loc.gov/METS/'/>", "root element is '{http://www.loc.gov/METS/}mets'"),
    (b"<ebuCoreMain xmlns='urn:ebu:metadata-schema:ebuCore_2014'/>", "not an EBUCore sidecar"),
    (b"<!DOCTYPE x [<!ENTITY a 'aaaa'>]><x>&a;</x>", "DTD"),
    (b"<e:ebuCoreMain xmlns:e='urn:ebu:metadata-schema:ebucore'/>", "no coreMetadata"),
])
def test_foreign_or_garbled_xml_is_refused_with_the_reason(xml: bytes, says: str) -> None:
    with pytest.raises(ValueError, match="sidecar|DTD") as caught:
        parse_sidecar(xml)
    assert says in str(caught.value)


def test_a_sidecar_with_bad_values_is_refused_by_name() -> None:
    good = build_sidecar(rich_document())
    for old, new, says in (
        (b">10:01:00;02<", b">25:61:00;02<", "start"),
        (b'<ebucore:width unit="pixel">1920<', b'<ebucore:width unit="pixel">wide<', "width is not an integer"),
        (b'typeLabel="SHA-256"', b'typeLabel="CRC32"', "CRC32"),
        (b"PT1320.4536S", b"22 minutes", "is not PT<seconds>S"),
        (b'<ebucore:identifier typeLabel="uid">', b'<ebucore:identifier typeLabel="other">', "does not identify"),
    ):
        assert old in good, old
        with pytest.raises(ValueError, match="sidecar|not") as caught:
            parse_sidecar(good.replace(old, new, 1))
        assert says in str(caught.value)


def test_text_xml_cannot_carry_is_refused_when_building() -> None:
    doc = rich_document()
    broken = doc.model_copy(update={"descriptive": doc.descriptive.model_copy(update={"title": "bell\x07"})})
    with pytest.raises(ValueError, match="XML 1.0 cannot carry"):
        build_sidecar(broken)
