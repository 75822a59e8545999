"""URLs in worker messages and logs lose their credentials, query and fragment; other text stays as written."""

from __future__ import annotations

import io
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
    ("(see https://h/a(b)?sig=a(b)c'd)", "(see https://h/a(b))"),  # RFC 3986 lets ( ) ' stand in a query
    ("https://u:p@[::1]:8080/p?q=1", "https://[::1]:8080/p"),
    ('{"uri": "https://h/p?sig=1"}', '{"uri": "https://h/p"}'),
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


def test_a_bad_log_call_is_still_the_handlers_to_report(capsys: pytest.CaptureFixture[str]) -> None:
    """A filter that raised would turn logging's own "--- Logging error ---" into a crash of the step."""
    handler = logging.StreamHandler(io.StringIO())
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("kubemam.test.redact.bad")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("after %d", "not a number")  # does not raise
    finally:
        log.removeHandler(handler)
    assert "--- Logging error ---" in capsys.readouterr().err


def test_a_url_with_a_space_is_refused_without_quoting_its_secret() -> None:
    """urllib's InvalidURL quotes the URL whole; the step's error and the purge failure name only where."""
    from kubemam.worker.contract import StepError
    from kubemam.worker.distribute import purge
    from kubemam.worker.source import _http_chunks

    with pytest.raises(StepError) as refused:
        _http_chunks("https://media.example.com/ep1.mov?X-Amz-Signature=9f0e1d x")
    assert "9f0e1d" not in str(refused.value) and "https://media.example.com/ep1.mov" in str(refused.value)
    with pytest.raises(RuntimeError) as failed:
        purge("https://cdn.example/purge?token=s3cr3t x", {"paths": []}, sleep=lambda _: None)
    assert "s3cr3t" not in str(failed.value) and "failed 1 times" in str(failed.value)
