"""A CPIX 2.3 / SPEKE v2 client: ask a key provider for content keys and the DRM signalling that goes with them.

The exchange (DASH-IF CPIX 2.3, profiled by AWS SPEKE v2.0):

* the packager POSTs a CPIX document (``Content-Type: application/xml``, ``X-Speke-Version: 2.0``) naming
  the content (``CPIX@contentId``, ``CPIX@version="2.3"``), one ``ContentKey`` per KID it chose, with
  ``commonEncryptionScheme`` and no key value; one ``DRMSystem`` per KID and DRM system holding the
  signalling it wants as empty elements (``PSSH``, ``ContentProtectionData``, ``HLSSignalingData`` for the
  ``media`` and the ``master`` playlist); and the encryption contract, one ``ContentKeyUsageRule`` per KID
  with an ``intendedTrackType`` and the ``VideoFilter``/``AudioFilter`` that say which tracks the key protects;
* the key provider answers the same document with the placeholders filled in: the key as
  ``ContentKey/Data/pskc:Secret/pskc:PlainValue`` (base64) and the signalling as base64 text.

Only clear keys over TLS are supported: a key the provider encrypted (``pskc:EncryptedValue``, CPIX
DeliveryData) is refused. Key bytes never reach a log line or an error message; logs name the URL (without
its query or credentials), the HTTP status and the KIDs.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import logging
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import Message
from typing import IO, Literal, NamedTuple

from kubemam.api.ladder import DrmSystem
from kubemam.drm.errors import KeyProviderError
from kubemam.drm.keys import KEY_BYTES, ContentKey, KeyTier
from kubemam.redact import redact_url

log = logging.getLogger(__name__)

CPIX_NS = "urn:dashif:org:cpix"
PSKC_NS = "urn:ietf:params:xml:ns:keyprov:pskc"
CPIX_VERSION = "2.3"
SPEKE_VERSION = "2.0"

ET.register_namespace("cpix", CPIX_NS)
ET.register_namespace("pskc", PSKC_NS)

Scheme = Literal["cenc", "cbcs"]
PlaylistKind = Literal["media", "master"]
PLAYLISTS: tuple[PlaylistKind, ...] = ("media", "master")

# DASH-IF system IDs. ClearKey uses the W3C common PSSH system ID (a version 1 box that only lists KIDs).
SYSTEM_IDS: dict[DrmSystem, uuid.UUID] = {
    "widevine": uuid.UUID("edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"),
    "playready": uuid.UUID("9a04f079-9840-4286-ab92-e65be0885f95"),
    "fairplay": uuid.UUID("94ce86fb-07ff-4f43-adb8-93d2fa968ca2"),
    "clearkey": uuid.UUID("1077efec-c0b2-4d02-ace3-3c1e52e2fb4b"),
}
SYSTEMS_BY_ID: dict[uuid.UUID, DrmSystem] = {system_id: name for name, system_id in SYSTEM_IDS.items()}


class _Wants(NamedTuple):
    pssh: bool
    content_protection_data: bool
    hls: bool


# What the request asks each system for. FairPlay has no PSSH (HLS only); ClearKey has no HLS signalling.
SIGNALLING: dict[DrmSystem, _Wants] = {
    "widevine": _Wants(pssh=True, content_protection_data=True, hls=True),
    "playready": _Wants(pssh=True, content_protection_data=True, hls=True),
    "fairplay": _Wants(pssh=False, content_protection_data=False, hls=True),
    "clearkey": _Wants(pssh=True, content_protection_data=True, hls=False),
}

# Video tiers in pixels (width x height) for the encryption contract, from the heights in kubemam.drm.keys
# at 16:9: SD is below 1280x720, HD up to 1920x1080, UHD above. The packager, not the key provider, picks
# the key per track; the filters tell the provider what each key is for.
SD_MAX_PIXELS = 1280 * 720 - 1
HD_MAX_PIXELS = 1920 * 1080

_DEFAULT_TRACK_TYPES: dict[KeyTier, str] = {
    "all": "ALL", "audio": "AUDIO", "video": "VIDEO", "sd": "SD", "hd": "HD", "uhd": "UHD1",
}

MAX_ANSWER_BYTES = 8 * 1024 * 1024
MAX_EXCERPT = 200


def intended_track_type(tier: KeyTier) -> str:
    """The SPEKE v2 ``intendedTrackType`` conventionally used for a key tier ("ALL", "AUDIO", "SD", "UHD1", ...)."""
    return _DEFAULT_TRACK_TYPES[tier]


class TierRequest(NamedTuple):
    """One key to ask for: the tier it protects, the KID the packager chose and its SPEKE track type."""

    tier: KeyTier
    kid: uuid.UUID
    intended_track_type: str


def _filters(tier: KeyTier) -> list[tuple[str, dict[str, str]]]:
    """The ContentKeyUsageRule filters for a tier, in CPIX schema order (VideoFilter before AudioFilter)."""
    if tier == "all":
        return [("VideoFilter", {}), ("AudioFilter", {})]
    if tier == "audio":
        return [("AudioFilter", {})]
    if tier == "video":
        return [("VideoFilter", {})]
    if tier == "sd":
        return [("VideoFilter", {"maxPixels": str(SD_MAX_PIXELS)})]
    if tier == "hd":
        return [("VideoFilter", {"minPixels": str(SD_MAX_PIXELS + 1), "maxPixels": str(HD_MAX_PIXELS)})]
    return [("VideoFilter", {"minPixels": str(HD_MAX_PIXELS + 1)})]


@dataclass(frozen=True)
class KeyRequest:
    """What to ask a CPIX key provider for: one key per tier, signalling for each DRM system."""

    content_id: str
    tiers: list[TierRequest]
    systems: list[DrmSystem]
    scheme: Scheme = "cenc"

    def __post_init__(self) -> None:
        if not self.content_id:
            raise ValueError("a CPIX request needs a content id")
        if not self.tiers:
            raise ValueError("a CPIX request needs at least one key")
        if not self.systems:
            raise ValueError("a CPIX request needs at least one DRM system")
        if self.scheme not in ("cenc", "cbcs"):
            raise ValueError(f"unknown encryption scheme {self.scheme!r}")
        for system in self.systems:
            if system not in SYSTEM_IDS:
                raise ValueError(f"unknown DRM system {system!r}")
        if len(set(self.systems)) != len(self.systems):
            raise ValueError("a DRM system is listed twice")
        if "fairplay" in self.systems and self.scheme != "cbcs":
            raise ValueError("fairplay needs the cbcs scheme")
        kids = [t.kid for t in self.tiers]
        if len(set(kids)) != len(kids):
            raise ValueError("a KID is listed twice")
        tiers = [t.tier for t in self.tiers]
        if len(set(tiers)) != len(tiers):
            raise ValueError("a key tier is listed twice")
        track_types = [t.intended_track_type for t in self.tiers]
        if len(set(track_types)) != len(track_types):
            raise ValueError("SPEKE v2 needs a distinct intendedTrackType per key")
        for t in self.tiers:
            if not t.intended_track_type:
                raise ValueError(f"the key for tier {t.tier} has no intendedTrackType")
            if (t.intended_track_type == "ALL") != (t.tier == "all"):
                raise ValueError(f"intendedTrackType ALL goes with tier all only, not {t.tier!r}")
            if t.intended_track_type != "ALL" and len(t.intended_track_type.split("+")) != len(_filters(t.tier)):
                raise ValueError(f"intendedTrackType {t.intended_track_type!r} has a component per filter; "
                                 f"tier {t.tier} has {len(_filters(t.tier))}")

    @property
    def kids(self) -> list[uuid.UUID]:
        return [t.kid for t in self.tiers]


@dataclass(frozen=True)
class DrmSignaling:
    """What the key provider returned for one KID and DRM system; None or empty where it returned nothing."""

    kid: uuid.UUID
    system: DrmSystem
    pssh: bytes | None = None
    content_protection_data: str | None = None
    hls_signaling: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CpixKeys:
    """The keys (in request order) and the signalling for every requested (KID, system)."""

    content_id: str
    keys: list[ContentKey]
    signaling: dict[tuple[uuid.UUID, DrmSystem], DrmSignaling]

    def key_for_tier(self, tier: KeyTier) -> ContentKey:
        for key in self.keys:
            if key.tier == tier:
                return key
        raise KeyError(tier)

    def key_for_kid(self, kid: uuid.UUID) -> ContentKey:
        for key in self.keys:
            if key.kid == kid:
                return key
        raise KeyError(kid)

    def signaling_for(self, kid: uuid.UUID, system: DrmSystem) -> DrmSignaling:
        return self.signaling[(kid, system)]


def _q(name: str, ns: str = CPIX_NS) -> str:
    return f"{{{ns}}}{name}"


def build_request(req: KeyRequest) -> bytes:
    """The CPIX 2.3 request document for ``req`` (UTF-8, with an XML declaration)."""
    root = ET.Element(_q("CPIX"), {"contentId": req.content_id, "version": CPIX_VERSION})
    # SPEKE v2 lists xmlns:pskc as mandatory on the root even though a request carries no pskc element.
    root.set("xmlns:pskc", PSKC_NS)
    key_list = ET.SubElement(root, _q("ContentKeyList"))
    for t in req.tiers:
        ET.SubElement(key_list, _q("ContentKey"), {"kid": str(t.kid), "commonEncryptionScheme": req.scheme})
    system_list = ET.SubElement(root, _q("DRMSystemList"))
    for t in req.tiers:
        for system in req.systems:
            drm = ET.SubElement(system_list, _q("DRMSystem"), {"kid": str(t.kid), "systemId": str(SYSTEM_IDS[system])})
            wants = SIGNALLING[system]
            if wants.pssh:
                ET.SubElement(drm, _q("PSSH"))
            if wants.content_protection_data:
                ET.SubElement(drm, _q("ContentProtectionData"))
            if wants.hls:
                for playlist in PLAYLISTS:
                    ET.SubElement(drm, _q("HLSSignalingData"), {"playlist": playlist})
    rules = ET.SubElement(root, _q("ContentKeyUsageRuleList"))
    for t in req.tiers:
        rule = ET.SubElement(rules, _q("ContentKeyUsageRule"),
                             {"kid": str(t.kid), "intendedTrackType": t.intended_track_type})
        for name, attributes in _filters(t.tier):
            ET.SubElement(rule, _q(name), attributes)
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kid(value: str | None, where: str) -> uuid.UUID:
    try:
        return uuid.UUID((value or "").strip())
    except ValueError:
        raise KeyProviderError(f"a {where} in the key provider's answer has no valid kid "
                               f"({_short(value or '', 40)!r})") from None


def _b64(text: str | None, what: str) -> bytes | None:
    """Base64 text to bytes (None when empty); a KeyProviderError naming ``what`` when it is not base64."""
    compact = "".join((text or "").split())
    if not compact:
        return None
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise KeyProviderError(f"{what} is not valid base64") from None


def _b64_text(text: str | None, what: str) -> str | None:
    data = _b64(text, what)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyProviderError(f"{what} is not UTF-8 text") from None


def _check_pssh(box: bytes, system: DrmSystem, kid: uuid.UUID) -> None:
    """A pssh box: 32-bit size (the whole box), 'pssh', version and flags, then the 16-byte system ID."""
    if len(box) < 32 or box[4:8] != b"pssh" or int.from_bytes(box[:4], "big") != len(box):
        raise KeyProviderError(f"the PSSH for KID {kid} ({system}) is not a pssh box")
    if uuid.UUID(bytes=box[12:28]) != SYSTEM_IDS[system]:
        raise KeyProviderError(f"the PSSH for KID {kid} ({system}) carries system ID {uuid.UUID(bytes=box[12:28])}, "
                               f"not {SYSTEM_IDS[system]}")


def _pssh_in_content_protection(cpd: str) -> list[bytes] | None:
    """The pssh boxes inside a ContentProtectionData fragment (``<cenc:pssh>``); None when it cannot be read."""
    try:
        wrapper = ET.fromstring(f'<w xmlns:cenc="urn:mpeg:cenc:2013" xmlns:mspr="urn:microsoft:playready">{cpd}</w>')
    except ET.ParseError:
        return None
    found: list[bytes] = []
    for element in wrapper.iter():
        if isinstance(element.tag, str) and element.tag.rsplit("}", 1)[-1] == "pssh" and element.text:
            try:
                found.append(base64.b64decode("".join(element.text.split()), validate=True))
            except (binascii.Error, ValueError):
                return None
    return found


def _read_keys(root: ET.Element, req: KeyRequest) -> list[ContentKey]:
    wanted = {t.kid: t for t in req.tiers}
    key_list = root.find(_q("ContentKeyList"))
    if key_list is None:
        raise KeyProviderError("the key provider's answer has no ContentKeyList")
    found: dict[uuid.UUID, ContentKey] = {}
    for element in key_list.findall(_q("ContentKey")):
        kid = _kid(element.get("kid"), "ContentKey")
        if kid not in wanted:
            raise KeyProviderError(f"the key provider returned a key for KID {kid}, which the request did not ask for")
        if kid in found:
            raise KeyProviderError(f"the key provider returned two keys for KID {kid}")
        scheme = element.get("commonEncryptionScheme")
        if scheme is not None and scheme != req.scheme:
            raise KeyProviderError(f"the key provider changed the encryption scheme of KID {kid} from {req.scheme} "
                                   f"to {_short(scheme, 16)!r}")
        secret = element.find(f"{_q('Data')}/{_q('Secret', PSKC_NS)}")
        if secret is None:
            raise KeyProviderError(f"the key provider returned no key value (Data/pskc:Secret) for KID {kid}")
        if secret.find(_q("EncryptedValue", PSKC_NS)) is not None:
            raise KeyProviderError(f"the key for KID {kid} is encrypted (pskc:EncryptedValue): encrypted content keys "
                                   "are not supported; have the key provider return clear keys (pskc:PlainValue) "
                                   "over HTTPS")
        plain = secret.find(_q("PlainValue", PSKC_NS))
        value = _b64(plain.text if plain is not None else None, f"the key for KID {kid}")
        if value is None:
            raise KeyProviderError(f"the key provider returned an empty key (pskc:PlainValue) for KID {kid}")
        if len(value) != KEY_BYTES:
            raise KeyProviderError(f"the key for KID {kid} is {len(value)} bytes, not {KEY_BYTES}")
        found[kid] = ContentKey(tier=wanted[kid].tier, kid=kid, key=value)
    missing = [str(kid) for kid in wanted if kid not in found]
    if missing:
        raise KeyProviderError(f"the key provider returned no key for KID {', '.join(missing)}")
    return [found[t.kid] for t in req.tiers]


def _read_signaling(root: ET.Element, req: KeyRequest) -> dict[tuple[uuid.UUID, DrmSystem], DrmSignaling]:
    wanted = set(req.kids)
    read: dict[tuple[uuid.UUID, DrmSystem], DrmSignaling] = {}
    system_list = root.find(_q("DRMSystemList"))
    elements = system_list.findall(_q("DRMSystem")) if system_list is not None else []
    for element in elements:
        kid = _kid(element.get("kid"), "DRMSystem")
        if kid not in wanted:
            raise KeyProviderError(f"the key provider returned DRM signalling for KID {kid}, "
                                   "which the request did not ask for")
        try:
            system_id = uuid.UUID((element.get("systemId") or "").strip())
        except ValueError:
            raise KeyProviderError(f"a DRMSystem for KID {kid} has no valid systemId") from None
        system = SYSTEMS_BY_ID.get(system_id)
        if system is None or system not in req.systems:
            log.debug("ignoring signalling for DRM system %s (KID %s), which the request did not ask for",
                      system_id, kid)
            continue
        if (kid, system) in read:
            raise KeyProviderError(f"the key provider returned DRM signalling for KID {kid} ({system}) twice")
        what = f"the {{}} for KID {kid} ({system})"
        pssh = _b64(element.findtext(_q("PSSH")), what.format("PSSH"))
        if pssh is not None:
            _check_pssh(pssh, system, kid)
        cpd = _b64_text(element.findtext(_q("ContentProtectionData")), what.format("ContentProtectionData"))
        if pssh is not None and cpd is not None:
            inner = _pssh_in_content_protection(cpd)
            if inner and pssh not in inner:
                raise KeyProviderError(f"the PSSH for KID {kid} ({system}) differs from the pssh in its "
                                       "ContentProtectionData")
        hls: dict[str, str] = {}
        for signal in element.findall(_q("HLSSignalingData")):
            playlist = signal.get("playlist") or "media"
            if playlist not in PLAYLISTS:
                raise KeyProviderError(f"HLSSignalingData for KID {kid} ({system}) names an unknown playlist "
                                       f"{_short(playlist, 16)!r}")
            if playlist in hls:
                raise KeyProviderError(f"the key provider returned two {playlist} HLSSignalingData for KID {kid} "
                                       f"({system})")
            text = _b64_text(signal.text, what.format(f"{playlist} HLSSignalingData"))
            if text is not None:
                hls[playlist] = text
        read[(kid, system)] = DrmSignaling(kid=kid, system=system, pssh=pssh, content_protection_data=cpd,
                                           hls_signaling=hls)
    signaling: dict[tuple[uuid.UUID, DrmSystem], DrmSignaling] = {}
    missing: list[str] = []
    for t in req.tiers:
        for system in req.systems:
            got = read.get((t.kid, system))
            if got is None:
                missing.append(f"{t.kid} ({system})")
                got = DrmSignaling(kid=t.kid, system=system)
            signaling[(t.kid, system)] = got
    if missing:
        log.warning("the key provider returned no DRM signalling for %s", ", ".join(missing))
    return signaling


def parse_response(body: bytes, req: KeyRequest) -> CpixKeys:
    """Read a CPIX answer to ``req``; a non-transient KeyProviderError when it is not a usable answer."""
    if b"<!DOCTYPE" in body[:4096].upper():
        raise KeyProviderError("the key provider's answer has a document type declaration, which CPIX never has")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise KeyProviderError(f"the key provider's answer is not well-formed XML ({exc})") from None
    if root.tag != _q("CPIX"):
        raise KeyProviderError(f"the key provider's answer is not a CPIX document (its root element is "
                               f"{_short(str(root.tag), 60)!r}, not {{{CPIX_NS}}}CPIX)")
    content_id = root.get("contentId")
    if content_id is not None and content_id != req.content_id:
        raise KeyProviderError(f"the key provider answered for content id {_short(content_id, 60)!r}, "
                               f"not {_short(req.content_id, 60)!r}")
    keys = _read_keys(root, req)
    signaling = _read_signaling(root, req)
    return CpixKeys(content_id=req.content_id, keys=keys, signaling=signaling)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would turn the POST into a GET and carry the bearer token along."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: Message, newurl: str) -> urllib.request.Request | None:
        return None


def _excerpt(data: bytes) -> str:
    text = " ".join(data.decode("utf-8", errors="replace").split())
    return text if len(text) <= MAX_EXCERPT else text[:MAX_EXCERPT]


def _retry_after(headers: Message | None) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class _Failure(KeyProviderError):
    """One failed attempt; ``retry_after`` is the server's Retry-After in seconds, if it sent one."""

    def __init__(self, message: str, transient: bool, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, transient, status=status)
        self.retry_after = retry_after


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float, where: str, kids: str) -> bytes:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            status = int(response.status)
            answer: bytes = response.read(MAX_ANSWER_BYTES + 1)
            speke = response.headers.get("X-Speke-Version")
    except urllib.error.HTTPError as exc:
        try:
            excerpt = _excerpt(exc.read(4096))
        except (OSError, http.client.HTTPException):
            excerpt = ""
        finally:
            exc.close()
        status = exc.code
        transient = status >= 500 or status in (408, 425, 429)  # a timeout, too early, throttled: ask again
        log.warning("CPIX key request to %s for KIDs %s: HTTP %d", where, kids, status)
        hint = " (redirects are not followed)" if 300 <= status < 400 else ""
        raise _Failure(f"the key provider at {where} answered HTTP {status}{hint}: {excerpt or '(no body)'}",
                       transient, status=status, retry_after=_retry_after(exc.headers)) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        transient = not isinstance(reason, ssl.SSLCertVerificationError)
        log.warning("CPIX key request to %s for KIDs %s failed: %s", where, kids, reason)
        raise _Failure(f"could not reach the key provider at {where}: {reason}", transient) from None
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        log.warning("CPIX key request to %s for KIDs %s failed: %s", where, kids, exc)
        reason = "timed out" if isinstance(exc, TimeoutError) else (str(exc) or type(exc).__name__)
        raise _Failure(f"the key request to {where} failed: {reason}", True) from None
    log.info("CPIX key request to %s for KIDs %s: HTTP %d", where, kids, status)
    if speke is not None and speke.strip() != SPEKE_VERSION:
        log.warning("the key provider at %s answered X-Speke-Version %s, not %s", where, _short(speke, 16),
                    SPEKE_VERSION)
    if len(answer) > MAX_ANSWER_BYTES:
        raise _Failure(f"the key provider at {where} answered more than {MAX_ANSWER_BYTES} bytes", False,
                       status=status)
    return answer


def fetch_keys(url: str, req: KeyRequest, *, token: str | None = None, timeout: float = 10, attempts: int = 4,
               sleep: Callable[[float], None] = time.sleep, backoff: float = 1.0,
               max_backoff: float = 30.0) -> CpixKeys:
    """POST the CPIX request for ``req`` to ``url`` and read the keys out of the answer.

    HTTP 5xx and 429, connection errors and timeouts are retried up to ``attempts`` times in all, waiting
    ``backoff`` seconds and doubling (at most ``max_backoff``, at least a numeric Retry-After); once they run
    out the last failure is raised with ``transient=True``. Any other 4xx and any unusable answer raise at once
    with ``transient=False``.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    where = redact_url(url)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise KeyProviderError(f"the key provider URL {where!r} is not http(s)")
    kids = ", ".join(str(kid) for kid in req.kids)
    headers = {
        "Content-Type": "application/xml",
        "Accept": "application/xml",
        "X-Speke-Version": SPEKE_VERSION,
        "User-Agent": "kubemam-cpix/1",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = build_request(req)
    last: _Failure | None = None
    for attempt in range(1, attempts + 1):
        if last is not None:
            delay = min(max_backoff, backoff * 2 ** (attempt - 2))
            if last.retry_after is not None:
                delay = min(max_backoff, max(delay, last.retry_after))
            log.info("retrying the CPIX key request to %s in %.1fs (attempt %d of %d)", where, delay, attempt,
                     attempts)
            sleep(delay)
        try:
            answer = _post(url, body, headers, timeout, where, kids)
        except _Failure as failure:
            if not failure.transient:
                raise KeyProviderError(failure.message, False, status=failure.status) from None
            last = failure
            continue
        return parse_response(answer, req)
    assert last is not None
    raise KeyProviderError(f"{last.message} (gave up after {attempts} attempts)", True, status=last.status)


def tiers_for(kids: Iterable[tuple[KeyTier, uuid.UUID]]) -> list[TierRequest]:
    """TierRequests with the conventional SPEKE track type for each tier."""
    return [TierRequest(tier, kid, intended_track_type(tier)) for tier, kid in kids]


__all__ = [
    "CPIX_NS",
    "CPIX_VERSION",
    "PSKC_NS",
    "SPEKE_VERSION",
    "SYSTEM_IDS",
    "CpixKeys",
    "DrmSignaling",
    "KeyProviderError",
    "KeyRequest",
    "Scheme",
    "TierRequest",
    "build_request",
    "fetch_keys",
    "intended_track_type",
    "parse_response",
    "redact_url",
    "tiers_for",
]
