"""The one logging set-up of `imagegen`: JSON lines for log collectors (`IMAGEGEN_LOG_FORMAT=json`,
what docker-compose.yml sets) or text for a person at a terminal (the default).

Every line carries its time, level, logger and message, and the request id when it is written while
a request runs (`api/request_ids.py`); fields passed as `extra=` (the access line's status, latency,
model...) become keys of their own. uvicorn's loggers go through the same handler.

What a client sent reaches the log (the access line's path, a percent-decoded `%0a` included), so
neither format lets it start a line of its own or move a terminal's cursor: both escape every control
character (JSON as `\\u001b`, the text format as `\\n`, `\\r`, `\\x1b`...).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from frontend.request_context import current_request_id

FORMATS = ("text", "json")
OWN_LOGGERS = ("imagegen", "frontend", "export", "benchmarks", "families")
"""The project's loggers: what a command other than `serve` shows at INFO (`quiet_libraries`)."""
CONTROL_CHARACTERS = (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
"""C0, DEL, C1, and Unicode's line and paragraph separators: what splits a line or drives a terminal."""
_TEXT_ESCAPES = {code: repr(chr(code))[1:-1] for code in CONTROL_CHARACTERS}
"""As Python writes them in a string literal: `\\n`, `\\t`, `\\x1b`, `\\u2028`."""
_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in CONTROL_CHARACTERS if code >= 0x20}
"""What `json.dumps` leaves raw (it escapes C0 itself); these occur only inside its strings."""
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's message with terminal colour codes
}
"""What every LogRecord has; any other attribute came from `extra=`."""


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the keys of the envelope are never overwritten by `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = _extra(record)
        line.update(
            timestamp=datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            level=record.levelname,
            logger=record.name,
            message=record.getMessage(),
        )
        if request_id := current_request_id():
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False).translate(_JSON_ESCAPES)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, with ` [request id]` before the colon inside a request; control
    characters escaped."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id = current_request_id()
        record.request = f" [{request_id}]" if request_id else ""
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The line before any traceback (which `format` appends, its newlines being its own), with
        every control character escaped: no field can forge a line or a terminal escape."""
        return super().formatMessage(record).translate(_TEXT_ESCAPES)


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """Route every logger (ours, uvicorn's, the libraries') to stderr in `log_format`."""
    if log_format not in FORMATS:
        raise ValueError(f"IMAGEGEN_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # uvicorn would otherwise keep handlers of its own (it is also run with log_config=None).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def quiet_libraries() -> None:
    """Libraries' loggers at WARNING and the project's at INFO: a command's own lines only (httpx, for
    one, logs every request it sends at INFO, which would interleave with `imagegen bench`'s bars)."""
    logging.getLogger().setLevel(logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
