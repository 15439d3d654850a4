"""The one mapping from the error family (frontend/errors.py) to HTTP: each error's status and
OpenAI error type, answered in OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`.

`HTTP_ANSWERS` names every class of the family (tests/frontend/test_http_errors.py fails on one
left out), and `error_response` is the only place that turns an error into a response.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse

from frontend import errors
from frontend.errors import APIError


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    type: str
    """OpenAI's error type: `invalid_request_error`, `authentication_error`, ..."""


HTTP_ANSWERS: dict[type[APIError], HttpAnswer] = {
    errors.Unauthenticated: HttpAnswer(401, "authentication_error"),
    errors.CsrfRejected: HttpAnswer(403, "permission_error"),
    errors.ScopeMissing: HttpAnswer(403, "permission_error"),
    errors.PlanLacksBenefit: HttpAnswer(403, "permission_error"),
    errors.RateLimited: HttpAnswer(429, "rate_limit_error"),
    errors.QueueFull: HttpAnswer(429, "rate_limit_error"),
    errors.PayloadTooLarge: HttpAnswer(413, "invalid_request_error"),
    errors.UnsupportedMediaType: HttpAnswer(415, "invalid_request_error"),
    errors.MalformedBody: HttpAnswer(400, "invalid_request_error"),
    errors.PromptMissing: HttpAnswer(400, "invalid_request_error"),
    errors.InvalidParameter: HttpAnswer(400, "invalid_request_error"),
    errors.ParameterNotSupported: HttpAnswer(400, "invalid_request_error"),
    errors.UnsupportedResponseFormat: HttpAnswer(400, "invalid_request_error"),
    errors.ClientClosedRequest: HttpAnswer(499, "invalid_request_error"),  # as nginx logs a client gone
    errors.RouteNotFound: HttpAnswer(404, "invalid_request_error"),
    errors.ProgressNotFound: HttpAnswer(404, "invalid_request_error"),
    errors.JobNotFound: HttpAnswer(404, "invalid_request_error"),
    errors.MethodNotAllowed: HttpAnswer(405, "invalid_request_error"),
    errors.ModelNotFound: HttpAnswer(404, "invalid_request_error"),
    errors.AdapterNotFound: HttpAnswer(404, "invalid_request_error"),
    errors.AdapterOfAnotherModel: HttpAnswer(400, "invalid_request_error"),
    errors.ContentRejected: HttpAnswer(400, "invalid_request_error"),  # as OpenAI answers content-policy refusals
    errors.InferenceUnavailable: HttpAnswer(503, "server_error"),
    errors.InferenceFailed: HttpAnswer(502, "server_error"),
    errors.DeadlineExceeded: HttpAnswer(504, "server_error"),
    errors.AdminConflict: HttpAnswer(409, "invalid_request_error"),
    errors.AdminRefused: HttpAnswer(422, "invalid_request_error"),
    errors.InternalError: HttpAnswer(500, "server_error"),
}


def http_status(error: APIError) -> int:
    """The status the error is answered with (the ledger records it beside the code)."""
    return HTTP_ANSWERS[type(error)].status


def error_body(error: APIError) -> dict[str, dict[str, str | None]]:
    """OpenAI's envelope: what an error response carries, and a failed job's `error`."""
    answer = HTTP_ANSWERS[type(error)]
    return {"error": {"message": error.message, "type": answer.type, "param": error.param, "code": error.code}}


def error_response(error: APIError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """`headers`: for answers sent outside the middleware that would add them (app.py's 500)."""
    answer = HTTP_ANSWERS[type(error)]
    body = error_body(error)
    retry = {} if error.retry_after is None else {"Retry-After": str(error.retry_after)}
    return JSONResponse(body, status_code=answer.status, headers={**retry, **(headers or {})})


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(exc)
