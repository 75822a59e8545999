"""kubemam-encrypt, our program over mp4ff's library that reads the key from stdin (or a file), writes the
same bytes as mp4ff's own mp4ff-encrypt (which takes it as an argument) for the same key and IV: video and
audio, cenc and cbcs, with pssh boxes. And it never puts the key in what it says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from kubemam.drm.keys import ContentKey
from kubemam.drm.pssh import build_pssh
from kubemam.media.cmaf import fragment_command

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]


@pytest.fixture(scope="module")
def tools() -> dict[str, Path]:
    from kubemam_local.gotools import resolve_tool

    return {name: resolve_tool(name) for name in ("kubemam-encrypt", "mp4ff-encrypt")}


@pytest.fixture(scope="module")
def tracks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A video and an audio track, fragmented as the package step fragments them (several segments)."""
    folder = tmp_path_factory.mktemp("tracks")
    master = folder / "rendition.mp4"  # H.264 with 2 s closed GOPs and AAC, as the transcoder writes
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=6", "-f", "lavfi",
                    "-i", "sine=f=440:sample_rate=48000:d=6", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "50",
                    "-keyint_min", "50", "-sc_threshold", "0", "-c:a", "aac", "-ac", "2", str(master)], check=True)
    made = {}
    for kind in ("video", "audio"):
        target = folder / f"{kind}.frag.mp4"
        subprocess.run(fragment_command(master, target, kind, 2), check=True, capture_output=True)
        made[kind] = target
    return made


@pytest.mark.parametrize("kind", ["video", "audio"])
@pytest.mark.parametrize("scheme", ["cenc", "cbcs"])
def test_the_same_bytes_as_mp4ff_encrypt(tools: dict[str, Path], tracks: dict[str, Path], tmp_path: Path,
                                         kind: str, scheme: str) -> None:
    key = ContentKey("all", uuid.uuid4(), os.urandom(16))
    iv = os.urandom(8 if scheme == "cenc" else 16).hex()
    pssh = tmp_path / "pssh.bin"
    pssh.write_bytes(b"".join(build_pssh(["widevine", "playready", "clearkey"], [key], b"content", scheme).values()))
    source = tracks[kind]
    reference, ours, from_file = tmp_path / "reference.mp4", tmp_path / "ours.mp4", tmp_path / "from-file.mp4"
    subprocess.run([str(tools["mp4ff-encrypt"]), "-scheme", scheme, "-kid", key.kid.hex, "-key", key.key.hex(),
                    "-iv", iv, "-pssh", str(pssh), str(source), str(reference)], check=True, capture_output=True)
    params = json.dumps({"kid": key.kid.hex, "key": key.key.hex(), "iv": iv})
    subprocess.run([str(tools["kubemam-encrypt"]), "-scheme", scheme, "-pssh", str(pssh), str(source), str(ours)],
                   input=params, text=True, check=True, capture_output=True)
    params_file = tmp_path / "params.json"  # the other way in: a file (the worker uses stdin)
    params_file.write_text(params)
    params_file.chmod(0o600)
    subprocess.run([str(tools["kubemam-encrypt"]), "-scheme", scheme, "-pssh", str(pssh), "-params",
                    str(params_file), str(source), str(from_file)], check=True, capture_output=True)
    expected = reference.read_bytes()
    assert len(expected) > source.stat().st_size  # encrypted: senc/saiz/saio, pssh and sinf were added
    assert ours.read_bytes() == expected
    assert from_file.read_bytes() == expected
    assert source.read_bytes() != expected


def test_bad_parameters_are_refused_without_echoing_the_key(tools: dict[str, Path], tracks: dict[str, Path],
                                                             tmp_path: Path) -> None:
    key = os.urandom(16).hex()
    encrypt = [str(tools["kubemam-encrypt"]), "-scheme", "cenc", str(tracks["audio"]), str(tmp_path / "out.mp4")]
    cases = {
        "short key": ({"kid": uuid.uuid4().hex, "key": key[:30], "iv": "00" * 8}, "key is 15 bytes"),
        "no hex": ({"kid": uuid.uuid4().hex, "key": key[:31] + "g", "iv": "00" * 8}, "key is not hex"),
        "bad iv": ({"kid": uuid.uuid4().hex, "key": key, "iv": "00" * 12}, "iv is 12 bytes"),
        "an unknown field": ({"kid": uuid.uuid4().hex, "key": key, "iv": "00" * 8, "k": key}, "not a JSON object"),
    }
    for case, (params, said) in cases.items():
        result = subprocess.run(encrypt, input=json.dumps(params), text=True, capture_output=True)
        assert result.returncode == 1, case
        assert said in result.stderr, (case, result.stderr)
        assert key[:30] not in result.stderr + result.stdout, case
    result = subprocess.run([*encrypt[:3], "-scheme", "cens", *encrypt[3:]], capture_output=True, text=True,
                            input=json.dumps({"kid": uuid.uuid4().hex, "key": key, "iv": "00" * 8}))
    assert result.returncode == 1 and "scheme must be cenc or cbcs" in result.stderr
