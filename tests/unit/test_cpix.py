"""The CPIX 2.3 / SPEKE v2 client against a real key server on loopback."""

from __future__ import annotations

import base64
import logging
import socket
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from kubemam.api.ladder import DrmSystem
from kubemam.drm.cpix import (
    CPIX_NS,
    PSKC_NS,
    SYSTEM_IDS,
    KeyRequest,
    TierRequest,
    build_request,
    fetch_keys,
    parse_response,
    redact_url,
    tiers_for,
)
from kubemam.drm.errors import KeyProviderError
from kubemam.drm.keys import ContentKey
from tests.cpix_server import CpixKeyServer, pssh_box

C = f"{{{CPIX_NS}}}"
P = f"{{{PSKC_NS}}}"


@pytest.fixture
def server() -> Iterator[CpixKeyServer]:
    with CpixKeyServer() as running:
        yield running


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _request(content_id: str = "asset-ep1", *, systems: tuple[str, ...] = ("widevine", "playready", "clearkey"),
             scheme: str = "cenc") -> KeyRequest:
    tiers = tiers_for([("audio", uuid.uuid4()), ("sd", uuid.uuid4()), ("hd", uuid.uuid4())])
    return KeyRequest(content_id, tiers, list(systems), scheme)  # type: ignore[arg-type]


def _secret_forms(key: bytes) -> list[str]:
    """Every way a key could leak into text: hex (both cases) and base64 of the key and of its 15-byte prefix."""
    forms = []
    for value in (key, key[:15]):
        forms += [value.hex(), value.hex().upper(), base64.b64encode(value).decode(),
                  base64.b64encode(value).decode().rstrip("=")]
    return forms


def _answer(req: KeyRequest, keys: dict[uuid.UUID, bytes]) -> ET.Element:
    """A CPIX answer to ``req`` built by hand: the request document with the keys filled in."""
    root = ET.fromstring(build_request(req))
    for element in root.iter(f"{C}ContentKey"):
        secret = ET.SubElement(ET.SubElement(element, f"{C}Data"), f"{P}Secret")
        ET.SubElement(secret, f"{P}PlainValue").text = base64.b64encode(keys[uuid.UUID(element.get("kid"))]).decode()
    return root


def _keys(req: KeyRequest) -> dict[uuid.UUID, bytes]:
    return {t.kid: bytes(range(16)) for t in req.tiers}


# -- the request document ---------------------------------------------------------------------------------------

def test_request_document_is_cpix_2_3_with_a_speke_encryption_contract() -> None:
    req = _request(systems=("widevine", "fairplay"), scheme="cbcs")
    root = ET.fromstring(build_request(req))
    assert root.tag == f"{C}CPIX"
    assert (root.get("contentId"), root.get("version")) == ("asset-ep1", "2.3")
    keys = root.findall(f"{C}ContentKeyList/{C}ContentKey")
    assert [uuid.UUID(k.get("kid")) for k in keys] == req.kids
    assert {k.get("commonEncryptionScheme") for k in keys} == {"cbcs"}
    assert all(len(k) == 0 for k in keys), "a request carries no key value"

    systems = root.findall(f"{C}DRMSystemList/{C}DRMSystem")
    assert len(systems) == len(req.kids) * 2
    widevine = [s for s in systems if s.get("systemId") == str(SYSTEM_IDS["widevine"])]
    fairplay = [s for s in systems if s.get("systemId") == str(SYSTEM_IDS["fairplay"])]
    assert [uuid.UUID(s.get("kid")) for s in widevine] == req.kids
    for element in widevine:
        assert [child.tag for child in element] == [f"{C}PSSH", f"{C}ContentProtectionData", f"{C}HLSSignalingData",
                                                    f"{C}HLSSignalingData"]
        assert [h.get("playlist") for h in element.findall(f"{C}HLSSignalingData")] == ["media", "master"]
        assert all(not (child.text or "").strip() for child in element)
    for element in fairplay:
        assert [child.tag for child in element] == [f"{C}HLSSignalingData", f"{C}HLSSignalingData"]

    rules = root.findall(f"{C}ContentKeyUsageRuleList/{C}ContentKeyUsageRule")
    assert [(uuid.UUID(r.get("kid")), r.get("intendedTrackType")) for r in rules] == [
        (req.kids[0], "AUDIO"), (req.kids[1], "SD"), (req.kids[2], "HD")]
    assert [child.tag for child in rules[0]] == [f"{C}AudioFilter"]
    assert rules[1].find(f"{C}VideoFilter").attrib == {"maxPixels": "921599"}  # type: ignore[union-attr]
    assert rules[2].find(f"{C}VideoFilter").attrib == {"minPixels": "921600", "maxPixels": "2073600"}  # type: ignore[union-attr]


def test_one_key_for_everything_uses_both_filters() -> None:
    req = KeyRequest("c", tiers_for([("all", uuid.uuid4())]), ["clearkey"])
    rule = ET.fromstring(build_request(req)).find(f"{C}ContentKeyUsageRuleList/{C}ContentKeyUsageRule")
    assert rule is not None and rule.get("intendedTrackType") == "ALL"
    assert [child.tag for child in rule] == [f"{C}VideoFilter", f"{C}AudioFilter"]


def test_key_request_refuses_what_speke_refuses() -> None:
    kid = uuid.uuid4()
    with pytest.raises(ValueError, match="cbcs"):
        KeyRequest("c", tiers_for([("all", kid)]), ["fairplay"], "cenc")
    with pytest.raises(ValueError, match="KID"):
        KeyRequest("c", [TierRequest("audio", kid, "AUDIO"), TierRequest("sd", kid, "SD")], ["widevine"])
    with pytest.raises(ValueError, match="intendedTrackType"):
        KeyRequest("c", [TierRequest("audio", uuid.uuid4(), "X"), TierRequest("sd", uuid.uuid4(), "X")], ["widevine"])
    with pytest.raises(ValueError, match="ALL"):
        KeyRequest("c", [TierRequest("audio", kid, "ALL")], ["widevine"])
    with pytest.raises(ValueError, match="DRM system"):
        KeyRequest("c", tiers_for([("all", kid)]), ["nagra"])  # type: ignore[list-item]


# -- against the key server ---------------------------------------------------------------------------------------

def test_keys_round_trip_and_are_stable_across_fetches(server: CpixKeyServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="kubemam.drm.cpix")
    req = _request()
    first = fetch_keys(server.url, req, token=None)
    second = fetch_keys(server.url, req, token=None)
    served = server.keys_for("asset-ep1")

    assert [(k.tier, k.kid) for k in first.keys] == [(t.tier, t.kid) for t in req.tiers]
    assert {k.kid: k.key for k in first.keys} == served
    assert first.keys == second.keys
    assert all(isinstance(k, ContentKey) and len(k.key) == 16 for k in first.keys)
    assert first.key_for_tier("sd").kid == req.tiers[1].kid
    assert len(server.requests) == 2
    # A different content id gets different keys, even for the same KIDs.
    other = fetch_keys(server.url, KeyRequest("asset-ep2", req.tiers, req.systems), token=None)
    assert all(a.key != b.key for a, b in zip(first.keys, other.keys, strict=True))

    for key in served.values():
        for form in _secret_forms(key):
            assert form not in caplog.text
            assert form not in repr(first)
    assert str(req.kids[0]) in caplog.text


def test_speke_headers_are_sent(server: CpixKeyServer) -> None:
    fetch_keys(server.url, _request(), token=None)
    (received,) = server.requests
    headers = {name.lower(): value for name, value in received.headers.items()}
    assert headers["x-speke-version"] == "2.0"
    assert headers["content-type"] == "application/xml"
    assert "authorization" not in headers
    assert ET.fromstring(received.body).get("version") == "2.3"


def test_signalling_per_kid_and_system(server: CpixKeyServer) -> None:
    req = _request(systems=("widevine", "playready", "fairplay", "clearkey"), scheme="cbcs")
    got = fetch_keys(server.url, req, token=None)
    assert set(got.signaling) == {(kid, system) for kid in req.kids for system in req.systems}
    for kid in req.kids:
        systems: tuple[DrmSystem, ...] = ("widevine", "playready", "clearkey")
        for system in systems:
            signal = got.signaling_for(kid, system)
            assert signal.pssh == pssh_box(SYSTEM_IDS[system], [kid])
            assert signal.content_protection_data is not None
            assert base64.b64encode(signal.pssh).decode() in signal.content_protection_data
        widevine = got.signaling_for(kid, "widevine")
        assert widevine.hls_signaling["media"].startswith("#EXT-X-KEY:METHOD=SAMPLE-AES,")
        assert widevine.hls_signaling["master"].startswith("#EXT-X-SESSION-KEY:")
        assert got.signaling_for(kid, "clearkey").hls_signaling == {}
        fairplay = got.signaling_for(kid, "fairplay")
        assert fairplay.pssh is None and fairplay.content_protection_data is None
        assert f'URI="skd://{kid.hex}"' in fairplay.hls_signaling["media"]


def test_bearer_token(server: CpixKeyServer) -> None:
    server.token = "s3cret-token"
    sleeps = Sleeps()
    with pytest.raises(KeyProviderError) as error:
        fetch_keys(server.url, _request(), token=None, sleep=sleeps)
    assert (error.value.transient, error.value.status) == (False, 401)
    assert "401" in str(error.value)
    assert server.request_count == 1 and sleeps == []
    with pytest.raises(KeyProviderError) as error:
        fetch_keys(server.url, _request(), token="not-the-token-9f2", sleep=sleeps)
    assert error.value.status == 401 and "not-the-token-9f2" not in str(error.value)

    got = fetch_keys(server.url, _request(), token="s3cret-token")
    assert len(got.keys) == 3
    assert server.requests[-1].headers.get("Authorization") == "Bearer s3cret-token"


def test_forbidden_raises_at_once(server: CpixKeyServer) -> None:
    server.mode = "forbidden"
    sleeps = Sleeps()
    with pytest.raises(KeyProviderError) as error:
        fetch_keys(server.url + "?apikey=do-not-show", _request(), token="bearer-b7e1", sleep=sleeps)
    assert error.value.transient is False and error.value.status == 403
    assert "HTTP 403" in str(error.value) and "may not ask for keys" in str(error.value)
    assert "do-not-show" not in str(error.value) and "bearer-b7e1" not in str(error.value)
    assert server.request_count == 1 and sleeps == []


def test_server_error_exhausts_the_attempts(server: CpixKeyServer) -> None:
    server.mode = "error"
    sleeps = Sleeps()
    with pytest.raises(KeyProviderError) as error:
        fetch_keys(server.url, _request(), token=None, attempts=3, sleep=sleeps)
    assert error.value.transient is True and error.value.status == 500
    assert "HTTP 500" in str(error.value) and "3 attempts" in str(error.value)
    assert server.request_count == 3
    assert sleeps == [1.0, 2.0]


def test_flaky_server_recovers(server: CpixKeyServer) -> None:
    server.mode = "flaky"
    server.flaky_failures = 2
    sleeps = Sleeps()
    got = fetch_keys(server.url, _request(), token=None, attempts=4, sleep=sleeps)
    assert server.request_count == 3 and sleeps == [1.0, 2.0]
    assert {k.kid: k.key for k in got.keys} == server.keys_for("asset-ep1")


@pytest.mark.parametrize("status", [408, 425, 429, 503])
def test_a_timeout_too_early_or_throttled_answer_is_asked_again(server: CpixKeyServer, status: int) -> None:
    """408 (the server timed the request out) and 425 (too early) pass like 429 and 5xx: the package step does
    not fail for good on a key server that was busy for a moment."""
    server.mode, server.flaky_failures, server.flaky_status = "flaky", 1, status
    sleeps = Sleeps()
    got = fetch_keys(server.url, _request(), token=None, attempts=3, sleep=sleeps)
    assert server.request_count == 2 and len(sleeps) == 1 and len(got.keys) == 3


def test_malformed_answer_is_not_retried(server: CpixKeyServer) -> None:
    server.mode = "malformed"
    sleeps = Sleeps()
    with pytest.raises(KeyProviderError) as error:
        fetch_keys(server.url, _request(), token=None, sleep=sleeps)
    assert error.value.transient is False
    assert "not well-formed XML" in str(error.value)
    assert server.request_count == 1 and sleeps == []


def test_short_key_names_the_kid_and_never_the_key(server: CpixKeyServer) -> None:
    server.mode = "short-key"
    req = _request()
    with pytest.raises(KeyProviderError) as error:
        fetch_keys(server.url, req, token=None, sleep=Sleeps())
    message = str(error.value)
    assert error.value.transient is False and server.request_count == 1
    assert str(req.kids[0]) in message and "15 bytes" in message
    served = server.keys_for("asset-ep1")
    assert served
    for key in served.values():
        for form in _secret_forms(key):
            assert form not in message and form not in repr(error.value)


def test_unreachable_provider_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps = Sleeps()
    with pytest.raises(KeyProviderError) as error:
        fetch_keys(f"http://127.0.0.1:{port}/cpix", _request(), token=None, attempts=2, sleep=sleeps)
    assert error.value.transient is True and "could not reach" in str(error.value)
    assert sleeps == [1.0]


def test_timeout_is_transient() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/cpix"
        with pytest.raises(KeyProviderError) as error:
            fetch_keys(url, _request(), token=None, timeout=0.2, attempts=2, sleep=Sleeps())
    assert error.value.transient is True and "timed out" in str(error.value)


# -- reading answers ------------------------------------------------------------------------------------------------

def _fails(root: ET.Element, req: KeyRequest) -> KeyProviderError:
    with pytest.raises(KeyProviderError) as error:
        parse_response(ET.tostring(root), req)
    assert error.value.transient is False
    return error.value


def test_parse_a_hand_made_answer() -> None:
    req = _request()
    got = parse_response(ET.tostring(_answer(req, _keys(req))), req)
    assert [k.key for k in got.keys] == [bytes(range(16))] * 3
    assert all(s.pssh is None and s.hls_signaling == {} for s in got.signaling.values())


def test_parse_refuses_unasked_and_missing_kids() -> None:
    req = _request()
    root = _answer(req, _keys(req))
    stranger = uuid.uuid4()
    root.find(f"{C}ContentKeyList/{C}ContentKey").set("kid", str(stranger))  # type: ignore[union-attr]
    message = str(_fails(root, req))
    assert str(stranger) in message and "did not ask for" in message

    root = _answer(req, _keys(req))
    key_list = root.find(f"{C}ContentKeyList")
    assert key_list is not None
    key_list.remove(key_list.findall(f"{C}ContentKey")[1])
    message = str(_fails(root, req))
    assert str(req.kids[1]) in message and "no key" in message

    root = _answer(req, _keys(req))
    drm = root.find(f"{C}DRMSystemList/{C}DRMSystem")
    assert drm is not None
    drm.set("kid", str(stranger))
    assert str(stranger) in str(_fails(root, req))


def test_parse_refuses_encrypted_keys() -> None:
    req = _request()
    root = _answer(req, _keys(req))
    secret = root.find(f"{C}ContentKeyList/{C}ContentKey/{C}Data/{P}Secret")
    assert secret is not None
    for child in list(secret):
        secret.remove(child)
    ET.SubElement(ET.SubElement(secret, f"{P}EncryptedValue"), "{http://www.w3.org/2001/04/xmlenc#}CipherData")
    message = str(_fails(root, req))
    assert "EncryptedValue" in message and "not supported" in message and str(req.kids[0]) in message


def test_parse_refuses_documents_that_are_not_cpix() -> None:
    req = _request()
    with pytest.raises(KeyProviderError, match="not a CPIX document"):
        parse_response(b"<CPIX><ContentKeyList/></CPIX>", req)
    with pytest.raises(KeyProviderError, match="not well-formed"):
        parse_response(b"", req)
    with pytest.raises(KeyProviderError, match="document type"):
        parse_response(b'<!DOCTYPE x [<!ENTITY a "b">]><x/>', req)
    root = _answer(req, _keys(req))
    root.set("contentId", "someone-else")
    assert "someone-else" in str(_fails(root, req))


def test_parse_refuses_bad_key_values_without_showing_them() -> None:
    req = _request()
    root = _answer(req, _keys(req))
    plain = root.find(f"{C}ContentKeyList/{C}ContentKey/{C}Data/{P}Secret/{P}PlainValue")
    assert plain is not None
    plain.text = "not*base64!"
    message = str(_fails(root, req))
    assert "base64" in message and "not*base64" not in message

    long_key = bytes(range(100, 132))
    plain.text = base64.b64encode(long_key).decode()
    message = str(_fails(root, req))
    assert "32 bytes" in message and all(form not in message for form in _secret_forms(long_key))


def test_parse_cross_checks_pssh_and_content_protection_data() -> None:
    req = _request(systems=("widevine",))
    root = _answer(req, _keys(req))
    drm = root.find(f"{C}DRMSystemList/{C}DRMSystem")
    assert drm is not None
    kid = uuid.UUID(drm.get("kid"))
    pssh = drm.find(f"{C}PSSH")
    cpd = drm.find(f"{C}ContentProtectionData")
    assert pssh is not None and cpd is not None
    pssh.text = base64.b64encode(pssh_box(SYSTEM_IDS["widevine"], [kid])).decode()
    other = pssh_box(SYSTEM_IDS["widevine"], [uuid.uuid4()])
    fragment = f'<cenc:pssh xmlns:cenc="urn:mpeg:cenc:2013">{base64.b64encode(other).decode()}</cenc:pssh>'
    cpd.text = base64.b64encode(fragment.encode()).decode()
    assert "differs" in str(_fails(root, req))

    pssh.text = base64.b64encode(pssh_box(SYSTEM_IDS["playready"], [kid])).decode()
    cpd.text = None
    assert "system ID" in str(_fails(root, req))


def test_redact_url() -> None:
    assert redact_url("https://user:pw@keys.example.com:8443/speke/v2?apikey=abc#x") == \
        "https://keys.example.com:8443/speke/v2"
    assert redact_url("http://127.0.0.1/cpix") == "http://127.0.0.1/cpix"
