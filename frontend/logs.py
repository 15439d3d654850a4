"""The one logging set-up of `imagegen`: JSON lines for log collectors (`IMAGEGEN_LOG_FORMAT=json`,
what docker-compose.yml sets) or text for a person at a terminal (the default).

Every line carries its time, level, logger and message, and the request id when it is written while
a request runs (`api/request_ids.py`); fields passed as `extra=` (the access line's status, latency,
model...) become keys of their own. uvicorn's loggers go through the same handler.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from frontend.api.request_ids import current_request_id

FORMATS = ("text", "json")
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
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, with ` [request id]` before the colon inside a request."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id = current_request_id()
        record.request = f" [{request_id}]" if request_id else ""
        return super().format(record)


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
