"""URLs in worker messages and logs lose their credentials, query and fragment; other text stays as written."""

from __future__ import annotations

import logging

import pytest

from kubemam.redact import RedactingFilter, redact_text, redact_url

SIGNED = ("https://media.example.com/in/ep1.mov?X-Amz-Algorithm=AWS4-HMAC-SHA256"
          "&X-Amz-Credential=AKIAEXAMPLE%2F20261203%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=9f0e1d")


def test_redact_url_keeps_where_and_drops_secrets() -> None:
    assert redact_url("https://user:pw@keys.example.com:8443/speke/v2?apikey=abc#x") == \
        "https://keys.example.com:8443/speke/v2"
    assert redact_url(SIGNED) == "https://media.example.com/in/ep1.mov"


@pytest.mark.parametrize(("text", "shown"), [
    (f"source {SIGNED} ended early", "source https://media.example.com/in/ep1.mov ended early"),
    (f"fetched {SIGNED}: 10 bytes.", "fetched https://media.example.com/in/ep1.mov: 10 bytes."),
    (f"'{SIGNED}' (quoted)", "'https://media.example.com/in/ep1.mov' (quoted)"),
    ("purge webhook http://ops:t0ken@cdn.example/purge failed", "purge webhook http://cdn.example/purge failed"),
    ("caption s3://kubemam-library/captions/en.vtt is not readable", None),  # nothing secret: unchanged
    ("no URL at all: 3 of 4 checks", None),
])
def test_redact_text(text: str, shown: str | None) -> None:
    assert redact_text(text) == (text if shown is None else shown)


def test_the_filter_redacts_messages_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("kubemam.test.redact")
    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="kubemam.test.redact"):
        log.info("fetched %s: %d bytes", SIGNED, 10)
        try:
            raise OSError(f"cannot open {SIGNED}")
        except OSError:
            log.exception("download failed")
    text = caplog.text
    assert "9f0e1d" not in text and "AKIAEXAMPLE" not in text
    assert "fetched https://media.example.com/in/ep1.mov: 10 bytes" in text and "cannot open https://" in text
