from __future__ import annotations

import base64
import re
import uuid
import xml.etree.ElementTree as ET

import pytest

from kubemam.drm.keys import ContentKey, KeyTier
from kubemam.drm.pssh import (
    Pssh,
    build_pssh,
    clearkey_pssh,
    parse_playready_object,
    parse_pssh_boxes,
    parse_widevine_pssh_data,
    playready_header,
    playready_object,
    pssh_box,
    widevine_pssh_data,
)
from kubemam.drm.signalling import (
    CENC_NS,
    MPD_NS,
    MSPR_NS,
    NAMESPACES,
    dash_content_protection,
    hls_key_lines,
    register_namespaces,
)
from kubemam.drm.systems import (
    CLEARKEY_DASH,
    FAIRPLAY,
    PLAYREADY,
    SYSTEM_IDS,
    W3C_COMMON,
    WIDEVINE,
)

# --- published vectors -------------------------------------------------------------------------------

# Shaka Packager, packager/media/base/pssh_generator_unittest.cc: the key IDs are ASCII text.
SHAKA_KID_1 = uuid.UUID(bytes=b"keyid1~~~~~~~~~~")
SHAKA_KID_2 = uuid.UUID(bytes=b"keyid2~~~~~~~~~~")
# kExpectedWidevinePsshCbcs: v0 box, key_id (field 2) twice, protection_scheme (field 9) = 'cbcs'.
SHAKA_WIDEVINE_CBCS = (bytes.fromhex("0000004a") + b"pssh" + bytes.fromhex("00000000")
                       + bytes.fromhex("edef8ba979d64acea3c827dcd51d21ed") + bytes.fromhex("0000002a")
                       + bytes.fromhex("1210") + b"keyid1~~~~~~~~~~" + bytes.fromhex("1210") + b"keyid2~~~~~~~~~~"
                       + bytes.fromhex("48f3c6899b06"))
# kExpectedWidevinePssh: the same without a protection scheme.
SHAKA_WIDEVINE = (bytes.fromhex("00000044") + b"pssh" + bytes.fromhex("00000000")
                  + bytes.fromhex("edef8ba979d64acea3c827dcd51d21ed") + bytes.fromhex("00000024")
                  + bytes.fromhex("1210") + b"keyid1~~~~~~~~~~" + bytes.fromhex("1210") + b"keyid2~~~~~~~~~~")
# kExpectedCommonPssh: v1 box of the W3C common system listing both KIDs, DataSize 0.
SHAKA_COMMON = (bytes.fromhex("00000044") + b"pssh" + bytes.fromhex("01000000")
                + bytes.fromhex("1077efecc0b24d02ace33c1e52e2fb4b") + bytes.fromhex("00000002")
                + b"keyid1~~~~~~~~~~" + b"keyid2~~~~~~~~~~" + bytes.fromhex("00000000"))
# kExpectedPlayReadyPsshWithCbcKey: v0 box; PRO length 0x1be, 1 record of type 1, 0x1b4 bytes of UTF-16LE.
SHAKA_PLAYREADY_CBCS = (
    bytes.fromhex("000001de") + b"pssh" + bytes.fromhex("00000000") + bytes.fromhex("9a04f07998404286ab92e65be0885f95")
    + bytes.fromhex("000001be") + bytes.fromhex("be010000" "0100" "0100" "b401")
    + ('<WRMHEADER xmlns="http://schemas.microsoft.com/DRM/2007/03/PlayReadyHeader" version="4.3.0.0">'
       '<DATA><PROTECTINFO><KIDS><KID ALGID="AESCBC" VALUE="aXllazFkfn5+fn5+fn5+fg=="></KID></KIDS>'
       "</PROTECTINFO></DATA></WRMHEADER>").encode("utf-16-le"))
# Shaka Packager docs (tutorials/raw_key): a Widevine v0 pssh with only content_id (field 4) "test content id".
SHAKA_WIDEVINE_CONTENT_ID = bytes.fromhex(
    "000000317073736800000000EDEF8BA979D64ACEA3C827DCD51D21ED00000011220F7465737420636F6E74656E74206964")

# dash.js demo content, as quoted in videojs/mpd-parser test/inheritAttributes.test.js: one KID signalled as
# cenc:default_KID, in a Widevine pssh (big-endian) and in a PlayReady 4.0 header (little-endian GUID).
DASHJS_KID = uuid.UUID("0872786e-f9e7-465f-a3a2-4e5b0ef8fa45")
DASHJS_WIDEVINE_PSSH = base64.b64decode("AAAANHBzc2gAAAAA7e+LqXnWSs6jyCfc1R0h7QAAABQIARIQCHJ4bvnnRl+jok5bDvj6RQ==")
DASHJS_PLAYREADY_PRO = base64.b64decode(
    "xAEAAAEAAQC6ATwAVwBSAE0ASABFAEEARABFAFIAIAB4AG0AbABuAHMAPQAiAGgAdAB0AHAAOgAvAC8AcwBjAGgAZQBtAGEAcwAuAG0AaQBj"
    "AHIAbwBzAG8AZgB0AC4AYwBvAG0ALwBEAFIATQAvADIAMAAwADcALwAwADMALwBQAGwAYQB5AFIAZQBhAGQAeQBIAGUAYQBkAGUAcgAiACAA"
    "dgBlAHIAcwBpAG8AbgA9ACIANAAuADAALgAwAC4AMAAiAD4APABEAEEAVABBAD4APABQAFIATwBUAEUAQwBUAEkATgBGAE8APgA8AEsARQBZ"
    "AEwARQBOAD4AMQA2ADwALwBLAEUAWQBMAEUATgA+ADwAQQBMAEcASQBEAD4AQQBFAFMAQwBUAFIAPAAvAEEATABHAEkARAA+ADwALwBQAFIA"
    "TwBUAEUAQwBUAEkATgBGAE8APgA8AEsASQBEAD4AYgBuAGgAeQBDAE8AZgA1AFgAMABhAGoAbwBrADUAYgBEAHYAagA2AFIAUQA9AD0APAAv"
    "AEsASQBEAD4APAAvAEQAQQBUAEEAPgA8AC8AVwBSAE0ASABFAEEARABFAFIAPgA=")
DASHJS_PLAYREADY_PSSH = base64.b64decode(
    "AAAB5HBzc2gAAAAAmgTweZhAQoarkuZb4IhflQAAAcTEAQAAAQABALoBPABXAFIATQBIAEUAQQBEAEUAUgAgAHgAbQBsAG4AcwA9ACIAaAB0"
    "AHQAcAA6AC8ALwBzAGMAaABlAG0AYQBzAC4AbQBpAGMAcgBvAHMAbwBmAHQALgBjAG8AbQAvAEQAUgBNAC8AMgAwADAANwAvADAAMwAvAFAA"
    "bABhAHkAUgBlAGEAZAB5AEgAZQBhAGQAZQByACIAIAB2AGUAcgBzAGkAbwBuAD0AIgA0AC4AMAAuADAALgAwACIAPgA8AEQAQQBUAEEAPgA8"
    "AFAAUgBPAFQARQBDAFQASQBOAEYATwA+ADwASwBFAFkATABFAE4APgAxADYAPAAvAEsARQBZAEwARQBOAD4APABBAEwARwBJAEQAPgBBAEUA"
    "UwBDAFQAUgA8AC8AQQBMAEcASQBEAD4APAAvAFAAUgBPAFQARQBDAFQASQBOAEYATwA+ADwASwBJAEQAPgBiAG4AaAB5AEMATwBmADUAWAAw"
    "AGEAagBvAGsANQBiAEQAdgBqADYAUgBRAD0APQA8AC8ASwBJAEQAPgA8AC8ARABBAFQAQQA+ADwALwBXAFIATQBIAEUAQQBEAEUAUgA+AA==")

UUID_TEXT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
KIDS = [uuid.UUID("00112233-4455-6677-8899-aabbccddeeff"), uuid.UUID("10213243-5465-7687-98a9-bacbdcedfe0f"),
        uuid.UUID("f0e1d2c3-b4a5-9687-7869-5a4b3c2d1e0f")]
TIERS: list[KeyTier] = ["audio", "sd", "hd"]
KEYS = [ContentKey(tier, kid, bytes(range(16))) for tier, kid in zip(TIERS, KIDS, strict=True)]


def _box(data: bytes) -> Pssh:
    [box] = parse_pssh_boxes(data)
    return box


def _header_xml(pro: bytes) -> str:
    return pro[10:].decode("utf-16-le")


# --- system IDs --------------------------------------------------------------------------------------


def test_system_ids() -> None:
    assert SYSTEM_IDS == {"widevine": WIDEVINE, "playready": PLAYREADY, "fairplay": FAIRPLAY, "clearkey": W3C_COMMON}
    assert WIDEVINE.bytes.hex() == "edef8ba979d64acea3c827dcd51d21ed"
    assert PLAYREADY.bytes.hex() == "9a04f07998404286ab92e65be0885f95"
    assert W3C_COMMON.bytes.hex() == "1077efecc0b24d02ace33c1e52e2fb4b"
    assert str(CLEARKEY_DASH) == "e2719d58-a985-b3c9-781a-b030af78d30e"


# --- the box -----------------------------------------------------------------------------------------


def test_clearkey_box_matches_shaka_packager_common_pssh() -> None:
    assert clearkey_pssh([SHAKA_KID_1, SHAKA_KID_2]) == SHAKA_COMMON
    assert parse_pssh_boxes(SHAKA_COMMON) == [Pssh(1, W3C_COMMON, [SHAKA_KID_1, SHAKA_KID_2], b"")]


def test_version_0_box_has_no_kid_count_and_refuses_kids() -> None:
    box = pssh_box(WIDEVINE, [], b"\x01\x02", version=0)
    assert box == bytes.fromhex("00000022") + b"pssh" + bytes(4) + WIDEVINE.bytes + bytes.fromhex("00000002 0102")
    with pytest.raises(ValueError, match="version 0"):
        pssh_box(WIDEVINE, [KIDS[0]], b"", version=0)
    with pytest.raises(ValueError, match="version 2"):
        pssh_box(WIDEVINE, [], b"", version=2)


def test_parse_a_concatenation_of_boxes_and_refuse_damage() -> None:
    boxes = build_pssh(["widevine", "playready", "clearkey"], KEYS, b"asset-1", "cenc")
    joined = boxes["widevine"] + boxes["playready"] + boxes["clearkey"]
    parsed = parse_pssh_boxes(joined)
    assert [p.system_id for p in parsed] == [WIDEVINE, PLAYREADY, W3C_COMMON]
    assert [p.version for p in parsed] == [0, 0, 1]
    assert parsed[2].kids == KIDS
    with pytest.raises(ValueError, match="claims"):
        parse_pssh_boxes(joined[:-1])
    with pytest.raises(ValueError, match="not 'pssh'"):
        parse_pssh_boxes(bytes.fromhex("00000008") + b"free")
    with pytest.raises(ValueError, match="DataSize"):
        parse_pssh_boxes(bytes.fromhex("00000021") + b"pssh" + bytes(4) + WIDEVINE.bytes + bytes.fromhex("00000000 00"))


# --- Widevine ----------------------------------------------------------------------------------------


def test_widevine_matches_shaka_packager_vectors() -> None:
    kids = [SHAKA_KID_1, SHAKA_KID_2]
    assert pssh_box(WIDEVINE, [], widevine_pssh_data(kids, b"", "cbcs"), version=0) == SHAKA_WIDEVINE_CBCS
    assert pssh_box(WIDEVINE, [], widevine_pssh_data(kids, b"", None), version=0) == SHAKA_WIDEVINE
    assert pssh_box(WIDEVINE, [], widevine_pssh_data([], b"test content id"), version=0) == SHAKA_WIDEVINE_CONTENT_ID


def test_widevine_field_numbers_and_fourcc() -> None:
    data = widevine_pssh_data([KIDS[0]], b"cid", "cenc")
    # key_id: field 2, length-delimited (0x12); content_id: field 4 (0x22); protection_scheme: field 9 varint (0x48)
    assert data == (b"\x12\x10" + KIDS[0].bytes + b"\x22\x03cid" + b"\x48"
                    + bytes.fromhex("e3dc959b06"))  # varint of 0x63656e63, 'cenc' read big-endian
    assert parse_widevine_pssh_data(data) == {
        "key_ids": [KIDS[0]], "provider": None, "content_id": b"cid", "protection_scheme": "cenc"}
    assert parse_widevine_pssh_data(_box(SHAKA_WIDEVINE_CBCS).data)["protection_scheme"] == "cbcs"


def test_widevine_reads_the_dashjs_demo_pssh() -> None:
    box = _box(DASHJS_WIDEVINE_PSSH)
    assert (box.version, box.system_id, box.kids) == (0, WIDEVINE, [])
    # the demo also sets the deprecated algorithm field 1 (varint), which is skipped
    assert parse_widevine_pssh_data(box.data)["key_ids"] == [DASHJS_KID]


# --- PlayReady ---------------------------------------------------------------------------------------


def test_little_endian_guid_conversion() -> None:
    # The dash.js demo's PlayReady <KID> is base64 of the GUID with the first three fields byte-swapped.
    assert base64.b64decode("bnhyCOf5X0ajok5bDvj6RQ==") == bytes.fromhex("6e787208" "e7f9" "5f46" "a3a24e5b0ef8fa45")
    assert DASHJS_KID.bytes_le == bytes.fromhex("6e787208e7f95f46a3a24e5b0ef8fa45")
    assert DASHJS_KID.bytes == bytes.fromhex("0872786ef9e7465fa3a24e5b0ef8fa45")
    assert "bnhyCOf5X0ajok5bDvj6RQ==" in playready_header([DASHJS_KID], "cenc")
    assert base64.b64encode(DASHJS_KID.bytes).decode() not in playready_header([DASHJS_KID], "cenc")


def test_playready_40_matches_the_dashjs_demo_byte_for_byte() -> None:
    pro = playready_object([DASHJS_KID], "cenc")
    assert pro == DASHJS_PLAYREADY_PRO
    assert pssh_box(PLAYREADY, [], pro, version=0) == DASHJS_PLAYREADY_PSSH
    assert parse_playready_object(DASHJS_PLAYREADY_PRO) == [DASHJS_KID]


def test_playready_43_cbcs_matches_shaka_packager() -> None:
    assert pssh_box(PLAYREADY, [], playready_object([SHAKA_KID_1], "cbcs"), version=0) == SHAKA_PLAYREADY_CBCS
    assert parse_playready_object(_box(SHAKA_PLAYREADY_CBCS).data) == [SHAKA_KID_1]


def test_playready_version_follows_scheme_and_key_count() -> None:
    assert 'version="4.0.0.0"' in playready_header(KIDS[:1], "cenc")
    multi = playready_header(KIDS, "cenc")
    assert 'version="4.2.0.0"' in multi and multi.count('<KID ALGID="AESCTR" VALUE="') == 3
    cbcs = playready_header(KIDS[:1], "cbcs")
    assert 'version="4.3.0.0"' in cbcs and '<KID ALGID="AESCBC" VALUE="' in cbcs
    assert "/>" not in multi + cbcs  # the spec wants explicit end tags


def test_playready_object_layout_and_la_url() -> None:
    pro = playready_object(KIDS, "cbcs", la_url="https://lic.example/pr?a=1&b=2")
    xml_text = _header_xml(pro)
    assert int.from_bytes(pro[0:4], "little") == len(pro)
    assert int.from_bytes(pro[4:6], "little") == 1  # one record
    assert int.from_bytes(pro[6:8], "little") == 1  # type 1: PlayReady Header
    assert int.from_bytes(pro[8:10], "little") == len(pro) - 10
    assert "<LA_URL>https://lic.example/pr?a=1&amp;b=2</LA_URL>" in xml_text
    assert parse_playready_object(pro) == KIDS


# --- the whole set -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["cenc", "cbcs"])
def test_build_pssh_round_trips_every_kid(scheme: str) -> None:
    boxes = build_pssh(["fairplay", "widevine", "playready", "clearkey"], KEYS, b"asset-1", scheme)
    assert list(boxes) == ["widevine", "playready", "clearkey"]  # FairPlay has no pssh
    widevine = _box(boxes["widevine"])
    assert (widevine.version, widevine.system_id) == (0, WIDEVINE)
    assert parse_widevine_pssh_data(widevine.data) == {
        "key_ids": KIDS, "provider": None, "content_id": b"asset-1", "protection_scheme": scheme}
    playready = _box(boxes["playready"])
    assert (playready.version, playready.system_id) == (0, PLAYREADY)
    assert parse_playready_object(playready.data) == KIDS
    assert _box(boxes["clearkey"]) == Pssh(1, W3C_COMMON, KIDS, b"")


def test_build_pssh_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown DRM system"):
        build_pssh(["primetime"], KEYS, b"", "cenc")
    with pytest.raises(ValueError, match="scheme"):
        build_pssh(["widevine"], KEYS, b"", "cens")
    with pytest.raises(ValueError, match="no content keys"):
        build_pssh(["widevine"], [], b"", "cenc")


# --- DASH --------------------------------------------------------------------------------------------


def _mpd_round_trip(elements: list[ET.Element]) -> tuple[str, ET.Element]:
    register_namespaces()
    root = ET.Element(f"{{{MPD_NS}}}MPD")
    adaptation = ET.SubElement(root, f"{{{MPD_NS}}}AdaptationSet")
    adaptation.extend(elements)
    text = ET.tostring(root, encoding="unicode")
    return text, ET.fromstring(text)


def test_dash_content_protection_parses_back() -> None:
    boxes = build_pssh(["widevine", "playready", "clearkey", "fairplay"], KEYS, b"asset-1", "cenc")
    elements = dash_content_protection(["widevine", "playready", "clearkey", "fairplay"], KIDS[1], "cenc", boxes, None)
    text, root = _mpd_round_trip(elements)
    assert text.count(f'xmlns:cenc="{CENC_NS}"') == 1 and text.count(f'xmlns:mspr="{MSPR_NS}"') == 1
    assert NAMESPACES == {"cenc": CENC_NS, "mspr": MSPR_NS}
    found = root.findall(".//mpd:ContentProtection", {"mpd": MPD_NS})
    assert [cp.get("schemeIdUri") for cp in found] == [
        "urn:mpeg:dash:mp4protection:2011", "urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed",
        "urn:uuid:9a04f079-9840-4286-ab92-e65be0885f95", "urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e"]
    assert [cp.get("value") for cp in found] == ["cenc", "Widevine", "MSPR 2.0", "ClearKey1.0"]
    default_kid = found[0].get(f"{{{CENC_NS}}}default_KID")
    assert default_kid == "10213243-5465-7687-98a9-bacbdcedfe0f" and UUID_TEXT.match(default_kid)
    psshs = [base64.b64decode(cp.findtext(f"{{{CENC_NS}}}pssh") or "") for cp in found[1:]]
    assert psshs == [boxes["widevine"], boxes["playready"], boxes["clearkey"]]
    assert _box(psshs[2]).system_id == W3C_COMMON  # ClearKey scheme, common-system pssh
    pro = base64.b64decode(found[2].findtext(f"{{{MSPR_NS}}}pro") or "")
    assert pro == _box(boxes["playready"]).data and parse_playready_object(pro) == KIDS
    assert found[1].find(f"{{{MSPR_NS}}}pro") is None


def test_dash_uses_the_given_pro_and_checks_the_boxes() -> None:
    boxes = build_pssh(["playready", "widevine"], KEYS[:1], b"", "cbcs")
    [_, cp] = dash_content_protection(["playready"], KIDS[0], "cbcs", boxes, DASHJS_PLAYREADY_PRO)
    assert cp.findtext(f"{{{MSPR_NS}}}pro") == base64.b64encode(DASHJS_PLAYREADY_PRO).decode()
    with pytest.raises(ValueError, match="no pssh box"):
        dash_content_protection(["clearkey"], KIDS[0], "cbcs", boxes, None)
    with pytest.raises(ValueError, match="must be one box of system"):
        dash_content_protection(["widevine"], KIDS[0], "cbcs", {"widevine": boxes["playready"]}, None)


# --- HLS ---------------------------------------------------------------------------------------------


def test_hls_cbcs_fairplay_and_widevine() -> None:
    kid = KIDS[2]
    boxes = build_pssh(["fairplay", "widevine"], KEYS, b"asset-1", "cbcs")
    lines = hls_key_lines(["fairplay", "widevine"], kid, "cbcs", boxes, session=False)
    wv_b64 = base64.b64encode(boxes["widevine"]).decode()
    assert lines == [
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://f0e1d2c3b4a5968778695a4b3c2d1e0f",'
        'KEYFORMAT="com.apple.streamingkeydelivery",KEYFORMATVERSIONS="1"',
        f'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="data:text/plain;base64,{wv_b64}",KEYID=0xF0E1D2C3B4A5968778695A4B3C2D1E0F,'
        'KEYFORMAT="urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed",KEYFORMATVERSIONS="1"',
    ]
    uri = re.search(r'URI="data:text/plain;base64,([^"]+)"', lines[1])
    assert uri is not None
    assert parse_widevine_pssh_data(_box(base64.b64decode(uri.group(1))).data)["protection_scheme"] == "cbcs"
    session = hls_key_lines(["fairplay", "widevine"], kid, "cbcs", boxes, session=True)
    assert [line.split(":", 1)[0] for line in session] == ["#EXT-X-SESSION-KEY"] * 2
    assert [line.split(":", 1)[1] for line in session] == [line.split(":", 1)[1] for line in lines]
    assert not any("METHOD=NONE" in line for line in session)


def test_hls_cenc_playready_and_no_clearkey() -> None:
    boxes = build_pssh(["playready", "clearkey"], KEYS, b"", "cenc")
    lines = hls_key_lines(["playready", "clearkey"], KIDS[0], "cenc", boxes, session=False)
    assert len(lines) == 1  # ClearKey has no HLS key format that carries a KID
    assert lines[0].startswith('#EXT-X-KEY:METHOD=SAMPLE-AES-CTR,URI="data:text/plain;charset=UTF-16;base64,')
    assert lines[0].endswith(',KEYFORMAT="com.microsoft.playready",KEYFORMATVERSIONS="1"')
    uri = re.search(r'base64,([^"]+)"', lines[0])
    assert uri is not None
    assert base64.b64decode(uri.group(1)) == _box(boxes["playready"]).data
    with pytest.raises(ValueError, match="FairPlay needs the cbcs"):
        hls_key_lines(["fairplay"], KIDS[0], "cenc", {}, session=False)
