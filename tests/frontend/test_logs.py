"""Log lines as collectors read them: one JSON object per line, the envelope's keys fixed, fields
passed as `extra=` as keys of their own, a traceback kept whole inside its line."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from frontend.logs import JsonFormatter, TextFormatter, configure_logging


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("imagegen.test", logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def failed(message: str) -> logging.LogRecord:
    """A record carrying a real traceback, as `log.exception` writes it."""
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        made = record(message)
        made.exc_info = sys.exc_info()
    return made


def test_a_json_line_has_the_envelope_and_the_extra_fields() -> None:
    line = json.loads(JsonFormatter().format(record("%d images", 2, status=200, model="flux-schnell")))
    assert line["message"] == "2 images" and line["level"] == "WARNING" and line["logger"] == "imagegen.test"
    assert line["status"] == 200 and line["model"] == "flux-schnell"
    assert line["timestamp"].endswith("Z") and "request_id" not in line  # outside a request
    forged = json.loads(JsonFormatter().format(record("real", level="forged")))  # extra cannot overwrite the envelope
    assert forged["level"] == "WARNING"


def test_a_traceback_stays_inside_its_json_line() -> None:
    output = JsonFormatter().format(failed("failed"))
    assert "\n" not in output
    assert "RuntimeError: boom" in json.loads(output)["exception"]


def test_the_text_line_reads_time_level_logger_message() -> None:
    assert TextFormatter().format(record("ready")).endswith(" WARNING imagegen.test: ready")


def test_control_characters_are_escaped_so_no_field_can_forge_a_line() -> None:
    """A client's path, percent-decoded, reaches the access line: `%0a` would start a forged line."""
    sent = "/v1/x\n2030-01-01 INFO imagegen.access: forged\r\x1b[2J\x85\u2028"
    text = TextFormatter().format(record("%s %s", "GET", sent))
    assert text.endswith(r"GET /v1/x\n2030-01-01 INFO imagegen.access: forged\r\x1b[2J\x85\u2028")
    output = JsonFormatter().format(record("%s", sent, path=sent))
    assert len(output.splitlines()) == 1 and "\x1b" not in output
    assert json.loads(output)["path"] == sent


def test_a_traceback_keeps_its_own_lines_in_text() -> None:
    first, *traceback = TextFormatter().format(failed("failed\nforged")).splitlines()
    assert first.endswith(r"failed\nforged") and traceback[-1] == "RuntimeError: boom"


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="IMAGEGEN_LOG_FORMAT"):
        configure_logging("yaml")
