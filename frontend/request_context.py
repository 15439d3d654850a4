"""The request being served, as every layer below the API sees it: its id (on every log line, sent
to Triton as the inference request id) and what the ledger learns of it for the access line.

Set by the API's middleware (`frontend/api/request_ids.py`); tasks and threads started while a
request runs inherit it. No HTTP here, so the Triton client and the logs read it without the API.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class RequestContext:
    """The request being served; the ledger adds the model and the error code once they are known."""

    id: str
    model: str = ""
    code: str = ""


_current: ContextVar[RequestContext | None] = ContextVar("imagegen_request", default=None)


def enter_request(context: RequestContext) -> None:
    """Make `context` the current request's, until the task that serves it ends."""
    _current.set(context)


def current_request() -> RequestContext | None:
    """The request this code runs for, None outside one."""
    return _current.get()


def current_request_id() -> str:
    context = _current.get()
    return context.id if context else ""
