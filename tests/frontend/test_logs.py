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


def test_a_json_line_has_the_envelope_and_the_extra_fields() -> None:
    line = json.loads(JsonFormatter().format(record("%d images", 2, status=200, model="flux-schnell")))
    assert line["message"] == "2 images" and line["level"] == "WARNING" and line["logger"] == "imagegen.test"
    assert line["status"] == 200 and line["model"] == "flux-schnell"
    assert line["timestamp"].endswith("Z") and "request_id" not in line  # outside a request
    forged = json.loads(JsonFormatter().format(record("real", level="forged")))  # extra cannot overwrite the envelope
    assert forged["level"] == "WARNING"


def test_a_traceback_stays_inside_its_json_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    output = JsonFormatter().format(failed)
    assert "\n" not in output
    assert "RuntimeError: boom" in json.loads(output)["exception"]


def test_the_text_line_reads_time_level_logger_message() -> None:
    assert TextFormatter().format(record("ready")).endswith(" WARNING imagegen.test: ready")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="IMAGEGEN_LOG_FORMAT"):
        configure_logging("yaml")
