"""Which Shaka Player script the preview page loads: a file given by --player-js or KUBEMAM_PLAYER_JS, else an
npm copy found near here, else a pinned jsDelivr URL with its Subresource Integrity hash (for users with
internet). kubemam ships no copy of its own. Plain <video> playback of the proxy and renditions needs none."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

PLAYER_JS_ENV = "KUBEMAM_PLAYER_JS"
SHAKA_VERSION = "5.2.12"  # the version tests/browser/package.json pins
CDN_URL = f"https://cdn.jsdelivr.net/npm/shaka-player@{SHAKA_VERSION}/dist/shaka-player.compiled.js"
# sha384 of that file as the npm registry holds it (jsDelivr serves npm files byte for byte);
# tests/unit/test_preview.py checks it against the npm copy the browser tests install.
CDN_INTEGRITY = "sha384-dC+HTy8lAr0Y9PZngIX8OfKQQ3JnR04Xs2ut3jQ1jxUXT1TZ23BTbPbTjM2cj4H0"
NPM_FILE = Path("node_modules/shaka-player/dist/shaka-player.compiled.js")
LOCAL_URL = "player.js"  # relative to the page; server.py answers it from the file


@dataclass(frozen=True)
class PlayerScript:
    kind: Literal["local", "cdn", "none"]
    path: Path | None = None
    url: str | None = None
    integrity: str | None = None

    def describe(self) -> dict[str, Any]:
        """What the page needs to load it, and a sentence saying where it comes from."""
        if self.kind == "local":
            return {"kind": "local", "url": LOCAL_URL, "integrity": None,
                    "label": f"Shaka Player from {self.path} (served by kubemam preview)"}
        if self.kind == "cdn":
            return {"kind": "cdn", "url": self.url, "integrity": self.integrity,
                    "label": f"Shaka Player {SHAKA_VERSION} from jsDelivr ({self.url}; needs internet)"}
        return {"kind": "none", "url": None, "integrity": None,
                "label": "no Shaka Player (--player-js none): files play, packages do not"}


def search_roots() -> list[Path]:
    """Where an npm copy may be: the working directory, and a kubemam checkout's browser test harness."""
    checkout = Path(__file__).resolve().parents[3]  # operator/kubemam/preview/player.py → the checkout
    return [Path.cwd(), checkout / "tests" / "browser"]


def find_player(explicit: str | None, environ: Mapping[str, str], roots: Sequence[Path]) -> PlayerScript:
    """--player-js (a path, `cdn` or `none`) wins, then KUBEMAM_PLAYER_JS, then an npm copy, then the CDN."""
    chosen = explicit or environ.get(PLAYER_JS_ENV) or None
    if chosen == "none":
        return PlayerScript("none")
    if chosen == "cdn":
        return PlayerScript("cdn", url=CDN_URL, integrity=CDN_INTEGRITY)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"the player script {path} does not exist (--player-js or {PLAYER_JS_ENV}: "
                                    "a path to shaka-player.compiled.js, `cdn` or `none`)")
        return PlayerScript("local", path=path.resolve())
    for root in roots:
        if (root / NPM_FILE).is_file():
            return PlayerScript("local", path=(root / NPM_FILE).resolve())
    return PlayerScript("cdn", url=CDN_URL, integrity=CDN_INTEGRITY)
