"""An asset on the local cluster, transcoded then packaged with DRM whose keys the operator keeps
in a Secret: the package decrypts with that key to the rendition's frames, and nowhere else does
the key appear (asset status, Jobs, events)."""

from __future__ import annotations

import base64
import copy
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.media.sample import make_sample
from kubemam.plan.package import key_secret_name
from kubemam.storage.s3 import list_objects
from kubemam.storage.uri import S3Uri
from tests.helpers import local_stack, packaged, wait_for
from tests.integration.test_package_worker import CLEARKEY, PLAYREADY, WIDEVINE, _framemd5, _pssh_boxes

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]

NAMESPACE = "kubemam-demo"
LADDER = {
    "apiVersion": "kubemam.io/v1alpha1", "kind": "TranscodeLadder", "metadata": {"name": "protected"},
    "spec": {
        "segmentDurationSeconds": 2,
        "renditions": [
            {"name": "h264-360p", "codec": "h264", "width": 640, "height": 360, "profile": "main",
             "preset": "veryfast", "rateControl": {"mode": "crf", "crf": 26, "maxrateKbps": 1200,
                                                   "bufsizeKbps": 2400}},
            {"name": "h264-180p", "codec": "h264", "width": 320, "height": 180, "profile": "main",
             "preset": "veryfast", "rateControl": {"mode": "crf", "crf": 28, "maxrateKbps": 400,
                                                   "bufsizeKbps": 800}},
        ],
        "audio": [{"name": "stereo-en", "bitrateKbps": 96, "language": "en"}],
        "packaging": {"formats": ["dash", "hls"]},
        "thumbnails": {"intervalSeconds": 2, "width": 160, "spriteColumns": 2, "spriteRows": 2},
        "drm": {"systems": ["widevine", "playready", "clearkey"], "scheme": "cenc",
                "keyProvider": {"type": "secret"}, "keyTiers": {"separateAudio": True}},
    },
}
ASSET = {
    "apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset", "metadata": {"name": "clip"},
    "spec": {"source": {"uri": "s3://kubemam-library/incoming/clip.mov"}, "metadata": {"title": "Clip"},
             "timeline": {"frameRate": "25", "startTimecode": "10:00:00:00"}, "ladderRef": {"name": "protected"},
             "captions": [{"language": "en", "format": "webvtt", "uri": "s3://kubemam-library/incoming/clip.en.vtt"}]},
}




def test_asset_is_packaged_with_drm_keys_only_the_secret_holds(control_plane: Any, tmp_path: Path) -> None:
    with local_stack(control_plane, tmp_path, NAMESPACE) as stack:
        api, store, custom, log = stack.api, stack.store, stack.custom, stack.log
        master = make_sample(tmp_path / "clip.mov", width=640, height=360, seconds=8)
        store.upload_file(str(master), "kubemam-library", "incoming/clip.mov")
        store.put_object(Bucket="kubemam-library", Key="incoming/clip.en.vtt",
                         Body=b"WEBVTT\n\n00:00:01.000 --> 00:00:03.000\nHello\n")
        custom.create("transcodeladders", copy.deepcopy(LADDER))
        custom.create("mediaassets", copy.deepcopy(ASSET))
        try:
            status = wait_for(lambda: packaged(custom, "clip"), timeout=400, what="the asset to be packaged")
        except AssertionError as err:
            raise AssertionError(f"{err}\n{log.read_text()[-3000:]}") from None
        assert status["phase"] == "Ready"

        # The keys: one per tier, each in an immutable Secret the asset owns, named as the planner names it.
        core = client.CoreV1Api(api)
        asset_uid = custom.get("mediaassets", "clip")["metadata"]["uid"]
        ladder = TranscodeLadderSpec.model_validate(LADDER["spec"])
        data = {}
        for tier in ("audio", "video"):
            secret = core.read_namespaced_secret(key_secret_name(NAMESPACE, "clip", asset_uid, ladder, tier), NAMESPACE)
            assert [o.uid for o in secret.metadata.owner_references] == [asset_uid]
            assert secret.immutable and secret.metadata.labels["kubemam.io/key-tier"] == tier
            data |= {k: base64.b64decode(v).decode() for k, v in secret.data.items()}
        assert set(data) == {"audio.kid", "audio.key", "video.kid", "video.key"}
        video_kid, video_key = uuid.UUID(data["video.kid"]), data["video.key"]

        packages = {p["format"]: p for p in status["packages"]}
        assert set(packages) == {"dash", "hls"}
        assert packages["dash"]["keyIds"] == sorted([data["audio.kid"], data["video.kid"]])
        tracks = {t["name"]: t["keyId"] for t in packages["dash"]["tracks"]}
        assert tracks == {"h264-360p": str(video_kid), "h264-180p": str(video_kid),
                          "stereo-en": data["audio.kid"]}

        prefix = S3Uri.parse(packages["dash"]["manifestUri"].rsplit("/", 1)[0])
        local = tmp_path / "package"
        for key, _ in list_objects(store, prefix):
            (local / key).parent.mkdir(parents=True, exist_ok=True)
            store.download_file(prefix.bucket, prefix.join(key).key, str(local / key))
        assert (local / "subs-en-subtitles" / "subtitles.vtt").exists()
        assert "thumbnail_tile" in (local / "manifest.mpd").read_text()

        # Decrypted with the Secret's key, the package is the rendition, frame for frame.
        rendition = next(r for r in status["renditions"] if r["name"] == "h264-360p")
        where = S3Uri.parse(rendition["uri"])
        store.download_file(where.bucket, where.key, str(tmp_path / "rendition.mp4"))
        track = tmp_path / "track.mp4"
        segments = sorted((local / "h264-360p").glob("seg-*.m4s"))
        track.write_bytes((local / "h264-360p" / "init.mp4").read_bytes()
                          + b"".join(p.read_bytes() for p in segments))
        reference = _framemd5(tmp_path / "rendition.mp4")
        assert len(reference) == 200
        assert _framemd5(track, video_key) == reference
        assert _framemd5(track, data["audio.key"]) != reference  # the audio tier's key is not the video's
        systems = {system: kids for system, kids, _ in _pssh_boxes((local / "h264-360p" / "init.mp4").read_bytes())}
        assert set(systems) == {WIDEVINE, PLAYREADY, CLEARKEY} and systems[CLEARKEY] == [video_kid]

        # The key is nowhere but the Secret: not in the asset, its Jobs or the events.
        batch = client.BatchV1Api(api)
        seen = json.dumps(custom.get("mediaassets", "clip"))
        seen += json.dumps(api.sanitize_for_serialization(batch.list_namespaced_job(NAMESPACE)))
        seen += json.dumps(api.sanitize_for_serialization(core.list_namespaced_event(NAMESPACE)))
        seen += log.read_text()
        for text in (local / "manifest.mpd", local / "master.m3u8", local / "manifest.json"):
            seen += text.read_text()
        for key_hex in (video_key, data["audio.key"]):
            assert key_hex not in seen.lower()
            assert base64.b64encode(bytes.fromhex(key_hex)).decode() not in seen
