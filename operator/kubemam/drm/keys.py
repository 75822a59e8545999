"""Content keys: what a key provider hands the packager. The key bytes never leave memory.

A key tier groups the tracks that share one key: "all" when the ladder asks for one key,
else "audio" and the video tiers "sd" (height < 720), "hd" (720–1080) and "uhd" (> 1080).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

KeyTier = Literal["all", "audio", "video", "sd", "hd", "uhd"]
KEY_BYTES = 16
KEYS_DIR_ENV = "KUBEMAM_KEYS_DIR"  # where the package Job mounts the key Secret (a `<tier>.kid`/`.key` per tier)


class ContentKeyError(ValueError):
    """A key that cannot be used (wrong length, missing tier); never carries the key itself."""


@dataclass(frozen=True)
class ContentKey:
    tier: KeyTier
    kid: uuid.UUID
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise ContentKeyError(f"the key for tier {self.tier} (KID {self.kid}) is {len(self.key)} bytes, "
                            f"not {KEY_BYTES}")

    @property
    def kid_hex(self) -> str:
        return self.kid.hex
