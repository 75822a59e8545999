"""How a package tells players about its DRM: DASH ContentProtection descriptors and HLS key tags.

DASH (DASH-IF IOP 4.3, 7.x): first the mp4protection descriptor with the scheme and cenc:default_KID,
then one descriptor per DRM system, schemeIdUri urn:uuid:<SystemID>, carrying the system's complete
pssh box base64 in <cenc:pssh>. The @value strings are the conventional ones: "MSPR 2.0" is what
Microsoft's PlayReady DASH guidance writes, "Widevine" what the dash.js reference content does
(the value is informative for Widevine; players key on schemeIdUri). PlayReady also gets <mspr:pro>,
the bare PlayReady Object, for players built against Microsoft's older signalling.

ClearKey in DASH uses the DASH-IF scheme urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e with value
"ClearKey1.0" (IOP 7.6.2.4), with the W3C common-system pssh (1077efec-...) inside for the CDM. dash.js
maps that scheme to its ClearKey key system and warns when the 1077efec ID is used as the scheme
instead; Shaka Player maps both URIs to org.w3.clearkey. FairPlay has no DASH signalling.

HLS (RFC 8216bis EXT-X-KEY / EXT-X-SESSION-KEY): METHOD=SAMPLE-AES for cbcs, SAMPLE-AES-CTR for cenc.
No IV attribute: with fMP4 the IVs travel in the segments (tenc/senc), and FairPlay carries its IV
with the key.
"""

from __future__ import annotations

import base64
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Final

from kubemam.drm.pssh import check_scheme, parse_pssh_boxes
from kubemam.drm.systems import (
    CLEARKEY_DASH_VALUE,
    DASH_SCHEME_ID_URIS,
    PLAYREADY,
    W3C_COMMON,
    WIDEVINE,
    system_id,
    urn,
)

MPD_NS: Final = "urn:mpeg:dash:schema:mpd:2011"
CENC_NS: Final = "urn:mpeg:cenc:2013"
MSPR_NS: Final = "urn:microsoft:playready"
# Prefixes for the MPD to declare once (ElementTree: ET.register_namespace(prefix, uri) for each).
NAMESPACES: Final[dict[str, str]] = {"cenc": CENC_NS, "mspr": MSPR_NS}

MP4_PROTECTION_SCHEME: Final = "urn:mpeg:dash:mp4protection:2011"
DASH_VALUES: Final[dict[str, str]] = {
    "widevine": "Widevine",
    "playready": "MSPR 2.0",
    "clearkey": CLEARKEY_DASH_VALUE,
}

FAIRPLAY_KEYFORMAT: Final = "com.apple.streamingkeydelivery"
PLAYREADY_KEYFORMAT: Final = "com.microsoft.playready"
WIDEVINE_KEYFORMAT: Final = urn(WIDEVINE)
# The PRO is UTF-16 XML behind a binary header; Shaka Packager and Microsoft's HLS guidance label it so.
_PLAYREADY_DATA_URI: Final = "data:text/plain;charset=UTF-16;base64,"
_DATA_URI: Final = "data:text/plain;base64,"

# The pssh box each system's signalling must carry.
_PSSH_SYSTEM_IDS: Final[dict[str, uuid.UUID]] = {"widevine": WIDEVINE, "playready": PLAYREADY, "clearkey": W3C_COMMON}


def register_namespaces() -> None:
    """Declare the cenc and mspr prefixes for ElementTree serialisation (process-wide, as ElementTree is)."""
    for prefix, uri in NAMESPACES.items():
        ET.register_namespace(prefix, uri)


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pssh_for(name: str, pssh_by_system: Mapping[str, bytes]) -> bytes:
    """The system's pssh box, checked to be exactly one box of that system."""
    box = pssh_by_system.get(name)
    if box is None:
        raise ValueError(f"no pssh box for DRM system {name!r}")
    parsed = parse_pssh_boxes(box)
    expected = _PSSH_SYSTEM_IDS[name]
    if len(parsed) != 1 or parsed[0].system_id != expected:
        found = [str(p.system_id) for p in parsed]
        raise ValueError(f"the pssh given for {name!r} must be one box of system {expected}, found {found}")
    return box


def _pro_from_pssh(box: bytes) -> bytes:
    return parse_pssh_boxes(box)[0].data


def dash_content_protection(systems: Sequence[str], default_kid: uuid.UUID, scheme: str,
                            pssh_by_system: Mapping[str, bytes],
                            playready_pro: bytes | None) -> list[ET.Element]:
    """The ContentProtection elements of one AdaptationSet, MPD-namespace qualified.

    `playready_pro` is the <mspr:pro> content; None takes it from the PlayReady pssh box's data.
    """
    check_scheme(scheme)
    mp4 = ET.Element(_q(MPD_NS, "ContentProtection"), {
        "schemeIdUri": MP4_PROTECTION_SCHEME,
        "value": scheme,
        _q(CENC_NS, "default_KID"): str(default_kid),  # lowercase 8-4-4-4-12, as the IOP writes it
    })
    elements = [mp4]
    for name in systems:
        system_id(name)  # refuses unknown names
        if name == "fairplay":
            continue  # HLS only
        box = _pssh_for(name, pssh_by_system)
        descriptor = ET.Element(_q(MPD_NS, "ContentProtection"), {
            "schemeIdUri": DASH_SCHEME_ID_URIS[name], "value": DASH_VALUES[name]})
        ET.SubElement(descriptor, _q(CENC_NS, "pssh")).text = _b64(box)
        if name == "playready":
            pro = playready_pro if playready_pro is not None else _pro_from_pssh(box)
            ET.SubElement(descriptor, _q(MSPR_NS, "pro")).text = _b64(pro)
        elements.append(descriptor)
    return elements


def _attributes(pairs: Sequence[tuple[str, str]]) -> str:
    return ",".join(f"{name}={value}" for name, value in pairs)


def hls_key_lines(systems: Sequence[str], kid: uuid.UUID, scheme: str, pssh_by_system: Mapping[str, bytes],
                  session: bool) -> list[str]:
    """One EXT-X-KEY (media playlist) or EXT-X-SESSION-KEY (multivariant playlist) line per system.

    Only SAMPLE-AES / SAMPLE-AES-CTR are ever written, so the session-key rule (no METHOD=NONE) holds.
    """
    check_scheme(scheme)
    tag = "#EXT-X-SESSION-KEY" if session else "#EXT-X-KEY"
    method = "SAMPLE-AES" if scheme == "cbcs" else "SAMPLE-AES-CTR"
    lines: list[str] = []
    for name in systems:
        system_id(name)  # refuses unknown names
        if name == "fairplay":
            if scheme != "cbcs":
                raise ValueError("FairPlay needs the cbcs scheme")
            # The skd:// URI is what the app hands its key server; the KID in hex is Shaka Packager's default.
            attrs = [("METHOD", method), ("URI", f'"skd://{kid.hex}"'),
                     ("KEYFORMAT", f'"{FAIRPLAY_KEYFORMAT}"'), ("KEYFORMATVERSIONS", '"1"')]
        elif name == "widevine":
            box = _pssh_for(name, pssh_by_system)
            # KEYID is a hexadecimal-sequence: RFC 8216 allows only 0x and [0-9A-F], so upper case.
            attrs = [("METHOD", method), ("URI", f'"{_DATA_URI}{_b64(box)}"'), ("KEYID", f"0x{kid.hex.upper()}"),
                     ("KEYFORMAT", f'"{WIDEVINE_KEYFORMAT}"'), ("KEYFORMATVERSIONS", '"1"')]
        elif name == "playready":
            pro = _pro_from_pssh(_pssh_for(name, pssh_by_system))
            attrs = [("METHOD", method), ("URI", f'"{_PLAYREADY_DATA_URI}{_b64(pro)}"'),
                     ("KEYFORMAT", f'"{PLAYREADY_KEYFORMAT}"'), ("KEYFORMATVERSIONS", '"1"')]
        else:
            # ClearKey: HLS defines no key format for it. Shaka Player reads KEYFORMAT="identity" with
            # SAMPLE-AES(-CTR) as ClearKey, but takes the URI as the 16-byte content key itself (a data:
            # URI or a URL it fetches), and it has no parser for the 1077efec common-system KEYFORMAT.
            # Putting the key (or a key URL this package does not serve) in a playlist is not signalling
            # a key ID, so ClearKey is left to DASH, where the KID-only pssh suffices.
            continue
        lines.append(f"{tag}:{_attributes(attrs)}")
    return lines
