"""The DASH MPD of a package (pure): static, CMAF, SegmentTemplate with an explicit SegmentTimeline.

Video is one AdaptationSet per key tier (a set shares one default_KID, DASH-IF IOP), audio one per
language and tier, then text (sidecar WebVTT) and the thumbnail tiles (DASH-IF image adaptation set).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from itertools import groupby

from kubemam.drm.signalling import NAMESPACES, dash_content_protection
from kubemam.packaging.layout import (
    DASH_SEGMENT_TEMPLATE,
    INIT_NAME,
    MediaTrack,
    Package,
)

MPD_NS = "urn:mpeg:dash:schema:mpd:2011"
PROFILES = "urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019"
ROLE_SCHEME = "urn:mpeg:dash:role:2011"
THUMBNAIL_SCHEME = "http://dashif.org/thumbnail_tile"


def _duration(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


def _timeline(parent: ET.Element, track: MediaTrack) -> None:
    template = ET.SubElement(parent, "SegmentTemplate", {
        "timescale": str(track.timescale), "initialization": f"{track.name}/{INIT_NAME}",
        "media": f"{track.name}/{DASH_SEGMENT_TEMPLATE}", "startNumber": "1"})
    timeline = ET.SubElement(template, "SegmentTimeline")
    first = True
    # Runs of equal durations collapse into one S@r, as packagers conventionally write them.
    for duration, run in groupby(track.segments, key=lambda s: s.duration):
        items = list(run)
        attrs = {"d": str(duration)}
        if first:
            attrs = {"t": str(items[0].decode_time), **attrs}
            first = False
        if len(items) > 1:
            attrs["r"] = str(len(items) - 1)
        ET.SubElement(timeline, "S", attrs)


def _protect(adaptation: ET.Element, package: Package, track: MediaTrack) -> None:
    protection = package.protection
    if protection is None or track.key_id is None or track.key_tier is None:
        return
    for element in dash_content_protection(protection.systems, track.key_id, protection.scheme,
                                           protection.pssh.get(track.key_tier, {}),
                                           protection.playready_pro.get(track.key_tier)):
        adaptation.append(_in_default_namespace(element))


def _in_default_namespace(element: ET.Element) -> ET.Element:
    """MPD-namespace tags unqualified: the document declares the MPD namespace as its default once."""
    for node in element.iter():
        if node.tag.startswith(f"{{{MPD_NS}}}"):
            node.tag = node.tag[len(MPD_NS) + 2:]
    return element


def _media_sets(package: Package) -> list[list[MediaTrack]]:
    def group(track: MediaTrack) -> tuple[str, str, str]:
        return track.kind, track.language or "", track.key_tier or ""

    ordered = sorted(package.tracks, key=lambda t: (t.kind != "video", *group(t)))
    return [list(run) for _, run in groupby(ordered, key=group)]


def build_mpd(package: Package) -> bytes:
    for prefix, uri in NAMESPACES.items():
        ET.register_namespace(prefix, uri)  # declared on the root by ElementTree when used
    mpd = ET.Element("MPD", {
        "xmlns": MPD_NS, "profiles": PROFILES, "type": "static", "minBufferTime": _duration(package.segment_seconds),
        "mediaPresentationDuration": _duration(package.duration_seconds)})
    period = ET.SubElement(mpd, "Period", {"id": "0", "start": "PT0S"})
    for index, tracks in enumerate(_media_sets(package)):
        first = tracks[0]
        attrs = {"id": str(index), "contentType": first.kind, "mimeType": f"{first.kind}/mp4",
                 "segmentAlignment": "true", "startWithSAP": "1"}
        if first.kind == "video":
            attrs |= {"maxWidth": str(max(t.width or 0 for t in tracks)),
                      "maxHeight": str(max(t.height or 0 for t in tracks))}
            if first.frame_rate:
                attrs["frameRate"] = first.frame_rate.removesuffix("/1")
        if first.language:
            attrs["lang"] = first.language
        adaptation = ET.SubElement(period, "AdaptationSet", attrs)
        _protect(adaptation, package, first)
        if first.kind == "audio":
            ET.SubElement(adaptation, "Role", {"schemeIdUri": ROLE_SCHEME, "value": "main"})
        for track in sorted(tracks, key=lambda t: t.peak_bandwidth):
            rep = {"id": track.name, "bandwidth": str(track.peak_bandwidth), "codecs": track.codecs}
            if track.kind == "video":
                rep |= {"width": str(track.width), "height": str(track.height), "sar": "1:1"}
            else:
                rep["audioSamplingRate"] = str(track.sample_rate or track.timescale)
            representation = ET.SubElement(adaptation, "Representation", rep)
            if track.kind == "audio":
                ET.SubElement(representation, "AudioChannelConfiguration", {
                    "schemeIdUri": "urn:mpeg:dash:23003:3:audio_channel_configuration:2011",
                    "value": str(track.channels or 2)})
            _timeline(representation, track)
    next_id = len(_media_sets(package))
    for offset, subtitle in enumerate(package.subtitles):
        adaptation = ET.SubElement(period, "AdaptationSet", {
            "id": str(next_id + offset), "contentType": "text", "mimeType": "text/vtt", "lang": subtitle.language})
        role = {"subtitles": "subtitle", "captions": "caption", "forced": "forced-subtitle"}[subtitle.kind]
        ET.SubElement(adaptation, "Role", {"schemeIdUri": ROLE_SCHEME, "value": role})
        if subtitle.label:
            ET.SubElement(adaptation, "Label").text = subtitle.label
        representation = ET.SubElement(adaptation, "Representation", {"id": subtitle.folder, "bandwidth": "256"})
        ET.SubElement(representation, "BaseURL").text = f"{subtitle.folder}/subtitles.vtt"
    thumbs = package.thumbnails
    if thumbs is not None:
        adaptation = ET.SubElement(period, "AdaptationSet", {
            "id": str(next_id + len(package.subtitles)), "contentType": "image", "mimeType": "image/jpeg"})
        ET.SubElement(adaptation, "SegmentTemplate", {
            "media": "thumbnails/sprite-$Number%03d$.jpg", "duration": str(thumbs.sheet_seconds),
            "timescale": "1", "startNumber": "1"})
        representation = ET.SubElement(adaptation, "Representation", {
            "id": "thumbnails", "bandwidth": "10000", "width": str(thumbs.sheet_width),
            "height": str(thumbs.sheet_height)})
        ET.SubElement(representation, "EssentialProperty", {
            "schemeIdUri": THUMBNAIL_SCHEME, "value": f"{thumbs.columns}x{thumbs.rows}"})
    ET.indent(mpd)
    return b"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n" + bytes(ET.tostring(mpd)) + b"\n"
