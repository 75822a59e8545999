"""The HLS playlists of a package (pure): a multivariant playlist over the same CMAF segments as
the MPD (EXT-X-MAP + fMP4, version 7), one media playlist per track, I-frame playlists for trick
play (byte ranges over each segment's moof and first frame) and WebVTT subtitle playlists."""

from __future__ import annotations

import math

from kubemam.drm.signalling import hls_key_lines
from kubemam.packaging.layout import (
    IFRAME_PLAYLIST,
    INIT_NAME,
    MEDIA_PLAYLIST,
    MediaTrack,
    Package,
    SubtitleTrack,
)

VERSION = 7
AUDIO_GROUP = "audio"
SUBTITLE_GROUP = "subs"


def _quoted(value: str) -> str:
    return '"' + value.replace('"', "'") + '"'


def _keys(package: Package, track: MediaTrack, session: bool) -> list[str]:
    protection = package.protection
    if protection is None or track.key_id is None or track.key_tier is None:
        return []
    return hls_key_lines(protection.systems, track.key_id, protection.scheme,
                         protection.pssh.get(track.key_tier, {}), session)


def _head(package: Package, track: MediaTrack, kind_tag: str) -> list[str]:
    """Tags every track playlist opens with, through the keys and the init segment."""
    target = max(math.ceil(track.segment_seconds(s) - 1e-6) for s in track.segments)
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", f"#EXT-X-TARGETDURATION:{target}",
             "#EXT-X-MEDIA-SEQUENCE:1", "#EXT-X-PLAYLIST-TYPE:VOD", kind_tag]
    return [*lines, *_keys(package, track, session=False), f'#EXT-X-MAP:URI="{INIT_NAME}"']


def media_playlist(package: Package, track: MediaTrack) -> str:
    lines = _head(package, track, "#EXT-X-INDEPENDENT-SEGMENTS")
    for number, segment in enumerate(track.segments, start=1):
        lines += [f"#EXTINF:{track.segment_seconds(segment):.5f},", segment.uri(number)]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def iframe_playlist(package: Package, track: MediaTrack) -> str:
    """Each segment opens with its keyframe: the range is the moof, the mdat header and that frame."""
    lines = _head(package, track, "#EXT-X-I-FRAMES-ONLY")
    for number, segment in enumerate(track.segments, start=1):
        lines += [f"#EXTINF:{track.segment_seconds(segment):.5f},",
                  f"#EXT-X-BYTERANGE:{segment.first_sample_end}@0", segment.uri(number)]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def subtitle_playlist(subtitle: SubtitleTrack) -> str:
    seconds = max(subtitle.duration_seconds, 1.0)
    return "\n".join(["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", f"#EXT-X-TARGETDURATION:{math.ceil(seconds)}",
                      "#EXT-X-MEDIA-SEQUENCE:1", "#EXT-X-PLAYLIST-TYPE:VOD", f"#EXTINF:{seconds:.5f},",
                      "subtitles.vtt", "#EXT-X-ENDLIST"]) + "\n"


def multivariant_playlist(package: Package) -> str:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    seen_tiers: set[str] = set()
    for track in package.tracks:  # one session key per key, so a player can fetch licences up front
        if track.key_tier and track.key_tier not in seen_tiers:
            seen_tiers.add(track.key_tier)
            lines += _keys(package, track, session=True)
    audio = package.audio
    for index, track in enumerate(audio):
        attrs = [f"TYPE=AUDIO,GROUP-ID={_quoted(AUDIO_GROUP)},NAME={_quoted(track.name)}"]
        if track.language:
            attrs.append(f"LANGUAGE={_quoted(track.language)}")
        attrs += [f"DEFAULT={'YES' if index == 0 else 'NO'},AUTOSELECT=YES",
                  f"CHANNELS={_quoted(str(track.channels or 2))}", f"URI={_quoted(f'{track.name}/{MEDIA_PLAYLIST}')}"]
        lines.append("#EXT-X-MEDIA:" + ",".join(attrs))
    for subtitle in package.subtitles:
        name = subtitle.label or f"{subtitle.language} ({subtitle.kind})"
        forced = "YES" if subtitle.kind == "forced" else "NO"
        attrs = [f"TYPE=SUBTITLES,GROUP-ID={_quoted(SUBTITLE_GROUP)},NAME={_quoted(name)}",
                 f"LANGUAGE={_quoted(subtitle.language)},DEFAULT=NO,AUTOSELECT=YES,FORCED={forced}"]
        if subtitle.kind == "captions":
            attrs.append('CHARACTERISTICS="public.accessibility.transcribes-spoken-dialog"')
        attrs.append(f"URI={_quoted(f'{subtitle.folder}/{MEDIA_PLAYLIST}')}")
        lines.append("#EXT-X-MEDIA:" + ",".join(attrs))
    audio_peak = max((t.peak_bandwidth for t in audio), default=0)
    audio_average = max((t.average_bandwidth for t in audio), default=0)
    audio_codecs = sorted({t.codecs for t in audio})
    for track in sorted(package.video, key=lambda t: t.peak_bandwidth):
        attrs = [f"BANDWIDTH={track.peak_bandwidth + audio_peak}",
                 f"AVERAGE-BANDWIDTH={track.average_bandwidth + audio_average}",
                 f"CODECS={_quoted(','.join([track.codecs, *audio_codecs]))}",
                 f"RESOLUTION={track.width}x{track.height}"]
        if track.frame_rate_decimal:
            attrs.append(f"FRAME-RATE={track.frame_rate_decimal}")
        if audio:
            attrs.append(f"AUDIO={_quoted(AUDIO_GROUP)}")
        if package.subtitles:
            attrs.append(f"SUBTITLES={_quoted(SUBTITLE_GROUP)}")
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attrs), f"{track.name}/{MEDIA_PLAYLIST}"]
    if not package.video:  # an audio-only package still needs a variant
        for track in audio:
            lines += [f"#EXT-X-STREAM-INF:BANDWIDTH={track.peak_bandwidth},CODECS={_quoted(track.codecs)}",
                      f"{track.name}/{MEDIA_PLAYLIST}"]
    if package.iframe_playlists:
        for track in sorted(package.video, key=lambda t: t.peak_bandwidth):
            lines.append(f"#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH={track.iframe_bandwidth},"
                         f"CODECS={_quoted(track.codecs)},RESOLUTION={track.width}x{track.height},"
                         f"URI={_quoted(f'{track.name}/{IFRAME_PLAYLIST}')}")
    return "\n".join(lines) + "\n"
