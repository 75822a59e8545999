"""Errors every key provider (CPIX, Secret, ...) raises, so a caller can tell a retry from a give-up.

A message never carries key bytes: it may name a KID, a URL, an HTTP status and a short excerpt of an
error body, nothing else.
"""

from __future__ import annotations


class KeyProviderError(Exception):
    """The key provider did not hand over usable keys.

    ``transient`` is True when trying again later may succeed (HTTP 5xx or 429, a refused or dropped
    connection, a timeout) and False when it will not until someone changes something (a 4xx, a document
    that is not CPIX, a key of the wrong length, a KID nobody asked for).
    """

    def __init__(self, message: str, transient: bool = False, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.status = status

    def __repr__(self) -> str:
        return f"KeyProviderError({self.message!r}, transient={self.transient}, status={self.status})"
