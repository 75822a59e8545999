"""CENC `pssh` boxes and the DRM-specific data they carry, built and parsed in pure Python.

* The box is ISO/IEC 23001-7 ProtectionSystemSpecificHeaderBox: a FullBox('pssh', version, flags=0)
  holding SystemID, then (version 1 only) KID_count and the KIDs, then DataSize and Data.
* Widevine's Data is a WidevinePsshData protobuf (proto2): key_id = 2 (repeated bytes),
  provider = 3, content_id = 4, protection_scheme = 9 (uint32 holding the scheme's fourcc, big-endian).
* PlayReady's Data is a PlayReady Object (PRO): little-endian length and record count, then records;
  record type 1 holds the PlayReady Header (WRMHEADER XML) in UTF-16LE.
* ClearKey uses the W3C common system: a version 1 box listing the KIDs, with no data.

Only key IDs go in: nothing here sees key bytes except through `ContentKey.kid`.
"""

from __future__ import annotations

import base64
import binascii
import struct
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypedDict
from xml.sax.saxutils import escape

from kubemam.drm.keys import ContentKey
from kubemam.drm.systems import PLAYREADY, PSSH_SYSTEMS, W3C_COMMON, WIDEVINE, system_id

SCHEMES: Final = ("cenc", "cbcs")
PLAYREADY_HEADER_NS: Final = "http://schemas.microsoft.com/DRM/2007/03/PlayReadyHeader"
# The PlayReady Header spec: "This value should not exceed 15 kilobytes".
PRO_MAX_BYTES: Final = 15 * 1024
_PRO_RECORD_HEADER: Final = 1  # record type 1: a PlayReady Header; 3 would be an embedded license store

# Widevine protobuf tags: (field number << 3) | wire type.
_WIRE_VARINT, _WIRE_FIXED64, _WIRE_LEN, _WIRE_FIXED32 = 0, 1, 2, 5
_WV_KEY_ID, _WV_PROVIDER, _WV_CONTENT_ID, _WV_PROTECTION_SCHEME = 2, 3, 4, 9


def check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unsupported protection scheme {scheme!r}; expected one of {list(SCHEMES)}")


# --- the box ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pssh:
    version: int
    system_id: uuid.UUID
    kids: list[uuid.UUID]
    data: bytes


def pssh_box(system_id: uuid.UUID, kids: Sequence[uuid.UUID], data: bytes, version: int = 1) -> bytes:
    """A complete `pssh` box. Version 1 lists `kids` in the box itself; version 0 cannot list any."""
    if version not in (0, 1):
        raise ValueError(f"pssh version {version} is not defined; use 0 or 1")
    if version == 0 and kids:
        raise ValueError("a version 0 pssh box cannot list KIDs; use version 1 or put them in the data")
    body = bytes([version, 0, 0, 0]) + system_id.bytes
    if version == 1:
        body += struct.pack(">I", len(kids)) + b"".join(kid.bytes for kid in kids)
    body += struct.pack(">I", len(data)) + data
    return struct.pack(">I4s", 8 + len(body), b"pssh") + body


def parse_pssh_boxes(data: bytes) -> list[Pssh]:
    """Every box of a concatenation of `pssh` boxes (as in a cenc:pssh element or EME "cenc" init data)."""
    boxes: list[Pssh] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 8:
            raise ValueError(f"truncated box header at byte {offset}")
        size, box_type = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:  # 64-bit largesize follows the type
            if len(data) - offset < 16:
                raise ValueError(f"truncated largesize at byte {offset}")
            (size,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        elif size == 0:  # the box runs to the end of the data
            size = len(data) - offset
        if size < header or offset + size > len(data):
            raise ValueError(f"box at byte {offset} claims {size} bytes; {len(data) - offset} remain")
        if box_type != b"pssh":
            raise ValueError(f"box at byte {offset} is {box_type!r}, not 'pssh'")
        boxes.append(_parse_pssh_body(data[offset + header:offset + size], offset))
        offset += size
    return boxes


def _parse_pssh_body(body: bytes, at: int) -> Pssh:
    if len(body) < 24:
        raise ValueError(f"pssh box at byte {at} is too short")
    version = body[0]
    if version > 1:
        raise ValueError(f"pssh box at byte {at} has unknown version {version}")
    system = uuid.UUID(bytes=body[4:20])
    pos = 20
    kids: list[uuid.UUID] = []
    if version == 1:
        (count,) = struct.unpack_from(">I", body, pos)
        pos += 4
        if len(body) < pos + 16 * count + 4:
            raise ValueError(f"pssh box at byte {at} lists {count} KIDs it does not hold")
        kids = [uuid.UUID(bytes=body[pos + 16 * i:pos + 16 * (i + 1)]) for i in range(count)]
        pos += 16 * count
    (size,) = struct.unpack_from(">I", body, pos)
    pos += 4
    if pos + size != len(body):
        raise ValueError(f"pssh box at byte {at}: DataSize {size} does not fill the box")
    return Pssh(version=version, system_id=system, kids=kids, data=body[pos:])


# --- Widevine ----------------------------------------------------------------------------------------


class WidevinePsshFields(TypedDict):
    key_ids: list[uuid.UUID]
    provider: str | None
    content_id: bytes | None
    protection_scheme: str | None


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or oversized protobuf varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _WIRE_LEN) + _varint(len(payload)) + payload


def widevine_pssh_data(kids: Sequence[uuid.UUID], content_id: bytes = b"", scheme: str | None = None) -> bytes:
    """WidevinePsshData, fields in number order as protobuf serialises them; empty/None fields are left out."""
    out = b"".join(_len_field(_WV_KEY_ID, kid.bytes) for kid in kids)
    if content_id:
        out += _len_field(_WV_CONTENT_ID, content_id)
    if scheme is not None:
        check_scheme(scheme)
        out += _varint(_WV_PROTECTION_SCHEME << 3 | _WIRE_VARINT) + _varint(int.from_bytes(scheme.encode(), "big"))
    return out


def parse_widevine_pssh_data(data: bytes) -> WidevinePsshFields:
    """The fields of WidevinePsshData this module writes (plus provider); other fields are skipped."""
    fields = WidevinePsshFields(key_ids=[], provider=None, content_id=None, protection_scheme=None)
    pos = 0
    while pos < len(data):
        tag, pos = _read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == _WIRE_VARINT:
            value, pos = _read_varint(data, pos)
            if number == _WV_PROTECTION_SCHEME:
                fields["protection_scheme"] = value.to_bytes(4, "big").decode("ascii")
        elif wire == _WIRE_LEN:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise ValueError(f"protobuf field {number} runs past the data")
            payload = data[pos:pos + length]
            pos += length
            if number == _WV_KEY_ID:
                if length != 16:
                    raise ValueError(f"Widevine key_id of {length} bytes, not 16")
                fields["key_ids"].append(uuid.UUID(bytes=payload))
            elif number == _WV_CONTENT_ID:
                fields["content_id"] = payload
            elif number == _WV_PROVIDER:
                fields["provider"] = payload.decode("utf-8")
        elif wire in (_WIRE_FIXED64, _WIRE_FIXED32):
            pos += 8 if wire == _WIRE_FIXED64 else 4
            if pos > len(data):
                raise ValueError(f"protobuf field {number} runs past the data")
        else:
            raise ValueError(f"protobuf wire type {wire} (field {number}) is not supported")
    return fields


# --- PlayReady ---------------------------------------------------------------------------------------


def _guid_b64(kid: uuid.UUID) -> str:
    # A PlayReady KID is a little-endian GUID: the first three fields (4, 2, 2 bytes) byte-swapped, the last 8 as is.
    return base64.b64encode(kid.bytes_le).decode("ascii")


def playready_header(kids: Sequence[uuid.UUID], scheme: str, la_url: str | None = None) -> str:
    """The WRMHEADER XML (the PlayReady Header, PRH).

    Version choice, the lowest the content allows (the Header spec's support matrix):
    * cenc with one key: 4.0.0.0, which every PlayReady client since version 1 reads. It is also
      what Shaka Packager writes for cenc and what the DASH-IF/dash.js demo content carries; 4.0
      holds a single <KID> element only.
    * cenc with several keys: 4.2.0.0 (PlayReady 3.0+), the first version with <KIDS>.
    * cbcs: 4.3.0.0 (PlayReady 4.0+), the first with ALGID="AESCBC"; no older client decrypts cbcs.
    The spec's syntax rules are kept: attributes in alphabetical order, every node closed by an explicit
    end tag, no XML declaration. CHECKSUM is optional and left out: it is AES-ECB of the KID under the
    content key, and the key stays with the key provider.
    """
    check_scheme(scheme)
    if not kids:
        raise ValueError("a PlayReady Header needs at least one KID")
    la = f"<LA_URL>{escape(la_url)}</LA_URL>" if la_url else ""
    if scheme == "cenc" and len(kids) == 1:
        return (f'<WRMHEADER xmlns="{PLAYREADY_HEADER_NS}" version="4.0.0.0"><DATA>'
                "<PROTECTINFO><KEYLEN>16</KEYLEN><ALGID>AESCTR</ALGID></PROTECTINFO>"
                f"<KID>{_guid_b64(kids[0])}</KID>{la}</DATA></WRMHEADER>")
    version, algid = ("4.2.0.0", "AESCTR") if scheme == "cenc" else ("4.3.0.0", "AESCBC")
    entries = "".join(f'<KID ALGID="{algid}" VALUE="{_guid_b64(kid)}"></KID>' for kid in kids)
    return (f'<WRMHEADER xmlns="{PLAYREADY_HEADER_NS}" version="{version}"><DATA>'
            f"<PROTECTINFO><KIDS>{entries}</KIDS></PROTECTINFO>{la}</DATA></WRMHEADER>")


def playready_object(kids: Sequence[uuid.UUID], scheme: str, la_url: str | None = None) -> bytes:
    """A PlayReady Object (PRO) with one record, the PlayReady Header in UTF-16LE (no byte order mark)."""
    record = playready_header(kids, scheme, la_url).encode("utf-16-le")
    records = struct.pack("<HH", _PRO_RECORD_HEADER, len(record)) + record
    pro = struct.pack("<IH", 6 + len(records), 1) + records
    if len(pro) > PRO_MAX_BYTES:
        raise ValueError(f"the PlayReady Object would be {len(pro)} bytes, over the 15 KB limit ({len(kids)} KIDs)")
    return pro


def parse_playready_object(data: bytes) -> list[uuid.UUID]:
    """The KIDs of every PlayReady Header in a PRO (4.0 <KID> text, 4.1 <KID VALUE>, 4.2+ <KIDS>)."""
    if len(data) < 6:
        raise ValueError("a PlayReady Object is at least 6 bytes")
    length, count = struct.unpack_from("<IH", data)
    if length != len(data):
        raise ValueError(f"the PlayReady Object says {length} bytes but is {len(data)}")
    kids: list[uuid.UUID] = []
    pos = 6
    for _ in range(count):
        if pos + 4 > len(data):
            raise ValueError("truncated PlayReady Object record")
        record_type, record_length = struct.unpack_from("<HH", data, pos)
        pos += 4
        if pos + record_length > len(data):
            raise ValueError("a PlayReady Object record runs past the object")
        if record_type == _PRO_RECORD_HEADER:
            kids += _header_kids(data[pos:pos + record_length].decode("utf-16-le"))
        pos += record_length
    return kids


def _header_kids(header: str) -> list[uuid.UUID]:
    try:
        root = ET.fromstring(header.lstrip("\ufeff"))
    except ET.ParseError as err:
        raise ValueError(f"the PlayReady Header is not XML: {err}") from err
    ns = {"pr": PLAYREADY_HEADER_NS}
    nodes = (root.findall("pr:DATA/pr:KID", ns)                      # 4.0: base64 as text
             + root.findall("pr:DATA/pr:PROTECTINFO/pr:KID", ns)      # 4.1: VALUE attribute
             + root.findall("pr:DATA/pr:PROTECTINFO/pr:KIDS/pr:KID", ns))  # 4.2, 4.3
    kids = []
    for node in nodes:
        value = node.get("VALUE") or (node.text or "").strip()
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error as err:
            raise ValueError(f"PlayReady KID {value!r} is not base64") from err
        if len(raw) != 16:
            raise ValueError(f"PlayReady KID {value!r} is {len(raw)} bytes, not 16")
        kids.append(uuid.UUID(bytes_le=raw))
    return kids


# --- ClearKey and the whole set --------------------------------------------------------------------


def clearkey_pssh(kids: Sequence[uuid.UUID]) -> bytes:
    """The W3C common-system box ClearKey reads: version 1, the KIDs in the box, no data."""
    if not kids:
        raise ValueError("a ClearKey pssh box needs at least one KID")
    return pssh_box(W3C_COMMON, kids, b"", version=1)


def build_pssh(systems: Sequence[str], keys: Sequence[ContentKey], content_id: bytes, scheme: str,
               *, playready_la_url: str | None = None) -> dict[str, bytes]:
    """One pssh box per named system that has one (FairPlay has none), each naming every key's KID.

    Widevine and PlayReady boxes are version 0 and list the KIDs in their data, as Shaka Packager
    writes them "for backward compatibility": some players and devices failed on version 1 boxes
    (ExoPlayer issue 1195, Fire TV gen 1/2 in ExoPlayer PR 7099). ClearKey's box must be version 1,
    since the KIDs in the box are all it has.
    """
    check_scheme(scheme)
    if not keys:
        raise ValueError("no content keys to signal")
    kids = list(dict.fromkeys(key.kid for key in keys))  # unique, in tier order
    boxes: dict[str, bytes] = {}
    for name in systems:
        system_id(name)  # refuses unknown names
        if name not in PSSH_SYSTEMS:
            continue
        if name == "widevine":
            boxes[name] = pssh_box(WIDEVINE, [], widevine_pssh_data(kids, content_id, scheme), version=0)
        elif name == "playready":
            boxes[name] = pssh_box(PLAYREADY, [], playready_object(kids, scheme, playready_la_url), version=0)
        else:
            boxes[name] = clearkey_pssh(kids)
    return boxes
