"""DRM system IDs (the 16-byte SystemID of a CENC `pssh` box, written as a UUID) and the ladder's names for them.

The IDs are those of the DASH-IF content protection identifier registry. ClearKey has two: the W3C
"common" system ID a ClearKey `pssh` box carries (W3C EME "cenc" Initialization Data Format, the only
pssh the ClearKey CDM reads key IDs from), and the scheme URI the DASH-IF IOP (v4.3, 7.6.2.4)
assigns to a ClearKey ContentProtection descriptor.
"""

from __future__ import annotations

import uuid
from typing import Final, Literal

DrmSystemName = Literal["widevine", "playready", "fairplay", "clearkey"]

WIDEVINE: Final = uuid.UUID("edef8ba9-79d6-4ace-a3c8-27dcd51d21ed")
PLAYREADY: Final = uuid.UUID("9a04f079-9840-4286-ab92-e65be0885f95")
FAIRPLAY: Final = uuid.UUID("94ce86fb-07ff-4f43-adb8-93d2fa968ca2")
# W3C "org.w3.clearkey" / common system: the SystemID of a version 1 pssh listing KIDs, no data.
W3C_COMMON: Final = uuid.UUID("1077efec-c0b2-4d02-ace3-3c1e52e2fb4b")
# DASH-IF IOP ClearKey scheme: ContentProtection@schemeIdUri, with @value "ClearKey1.0". Never a pssh SystemID.
CLEARKEY_DASH: Final = uuid.UUID("e2719d58-a985-b3c9-781a-b030af78d30e")
CLEARKEY_DASH_VALUE: Final = "ClearKey1.0"

# The ladder's name → the SystemID its pssh box (or, for FairPlay, its CPIX DRMSystem) uses.
SYSTEM_IDS: Final[dict[str, uuid.UUID]] = {
    "widevine": WIDEVINE,
    "playready": PLAYREADY,
    "fairplay": FAIRPLAY,
    "clearkey": W3C_COMMON,
}

# Systems that have a pssh box. FairPlay has none: it is signalled in HLS (EXT-X-KEY, skd://) only.
PSSH_SYSTEMS: Final = frozenset({"widevine", "playready", "clearkey"})

# The ladder's name → DASH ContentProtection@schemeIdUri. FairPlay has no DASH signalling.
DASH_SCHEME_ID_URIS: Final[dict[str, str]] = {
    "widevine": f"urn:uuid:{WIDEVINE}",
    "playready": f"urn:uuid:{PLAYREADY}",
    "clearkey": f"urn:uuid:{CLEARKEY_DASH}",
}


def system_id(name: str) -> uuid.UUID:
    """The SystemID of a ladder DRM system name; ValueError for a name the ladder does not know."""
    try:
        return SYSTEM_IDS[name]
    except KeyError:
        raise ValueError(f"unknown DRM system {name!r}; expected one of {sorted(SYSTEM_IDS)}") from None


def urn(system: uuid.UUID) -> str:
    """`urn:uuid:` form, lowercase 8-4-4-4-12, as DASH schemeIdUri and HLS KEYFORMAT write it."""
    return f"urn:uuid:{system}"
