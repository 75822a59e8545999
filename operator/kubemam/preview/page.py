"""The preview page as HTML: a static template (page.html) and the page's data as one JSON document.

The JSON sits in a <script type="application/json"> element with <, > and & written as \\u escapes, so no
text in it — a marker note holding "</script>", a title with "<!--" — can end the element or start markup;
the page reads it with JSON.parse and writes text with textContent only."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from importlib.resources import files
from typing import Any

from kubemam.preview.model import PageModel
from kubemam.preview.player import PlayerScript

DATA_MARK = "/*KUBEMAM_PREVIEW_DATA*/"


@cache
def template() -> str:
    text = files("kubemam.preview").joinpath("page.html").read_text(encoding="utf-8")
    if text.count(DATA_MARK) != 1:
        raise RuntimeError(f"page.html must hold {DATA_MARK} exactly once")
    return text


def package_path(source_id: str, manifest_uri: str) -> str:
    """Where the page asks for a package's manifest: pkg/<format>/<name>, relative to the page, so the
    manifest's relative segment URLs come back to the server too (server.py signs them)."""
    return f"pkg/{source_id.removeprefix('package-')}/{manifest_uri.rsplit('/', 1)[1]}"


def page_data(model: PageModel, sign: Callable[[str], str], player: PlayerScript) -> dict[str, Any]:
    """The model as the page reads it: files as presigned URLs, packages through the server."""
    data = model.model_dump(mode="json", by_alias=True)
    for source in data["sources"]:
        source["url"] = (sign(source["uri"]) if source["kind"] == "progressive"
                         else package_path(source["id"], source["uri"]))
        del source["uri"]
    sheets = {t["sheet"] for t in data["thumbnails"]}
    data["sheets"] = {uri: sign(uri) for uri in sorted(sheets)}
    data["poster"] = sign(data["poster"]) if data["poster"] else None
    data["player"] = player.describe()
    return data


def safe_json(data: Any) -> str:
    """JSON that cannot end a <script> element nor open markup inside it."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(model: PageModel, sign: Callable[[str], str], player: PlayerScript) -> str:
    before, after = template().split(DATA_MARK)
    return before + safe_json(page_data(model, sign, player)) + after
