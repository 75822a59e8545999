"""URLs made safe to show: no credentials, query or fragment.

A source, caption or webhook URL may carry a secret in its query (a presigned URL's X-Amz-Signature and
X-Amz-Credential, a token) or its user info. What a worker logs, and the error it reports (its termination
message, which becomes the asset's condition), shows where, never the secret.
"""

from __future__ import annotations

import logging
import re
import urllib.parse

# scheme://[userinfo@]host[:port][/path][?query][#fragment]. The host may be an IPv6 literal in brackets; the
# path, query and fragment run to whitespace or a double quote (RFC 3986 lets ( ) ' ! * stand unencoded in
# them), so a secret is never cut in two. What the text put after the URL is given back (_TRAILING).
_URL = re.compile(r"""\b[a-zA-Z][a-zA-Z0-9+.-]*://"""
                  r"""(?:[^\s/?#@"<>]*@)?(?:\[[0-9A-Fa-f:.]+\]|[^\s/?#"'<>()\[\]{}]*)"""
                  r"""[^\s?#"<>]*(?:\?[^\s#"]*)?(?:#[^\s"]*)?""")
_TRAILING = ".,:;!?)]}>'"


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment: safe for logs, messages and status conditions."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _redact_match(match: re.Match[str]) -> str:
    url = match.group(0)
    stripped = url.rstrip(_TRAILING)  # the sentence's punctuation or bracket after it, not the URL's
    trail = url[len(stripped):]
    parts = urllib.parse.urlsplit(stripped)
    if not (parts.query or parts.fragment or "@" in parts.netloc):
        return url  # nothing secret in it: shown as written (an s3:// URI, a plain path)
    return redact_url(stripped) + trail


def redact_text(text: str) -> str:
    """text with every URL in it redacted where it carries user info, a query or a fragment."""
    return _URL.sub(_redact_match, text)


class RedactingFilter(logging.Filter):
    """Redacts the URLs of every record a handler emits (the message with its arguments, and a traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call: the handler reports it ("--- Logging error ---")
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True
