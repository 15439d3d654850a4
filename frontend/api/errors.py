"""The one error family of the API and its one mapping to OpenAI's error envelope.

Every failure a client can see is an `APIError` subclass with its HTTP status, OpenAI error type
and our documented code; `error_response` is the only place that turns one into a response.
"""

from __future__ import annotations

from typing import ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse


class APIError(Exception):
    status: ClassVar[int]
    type: ClassVar[str]
    code: ClassVar[str]

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}


class Unauthenticated(APIError):
    """No credentials, or credentials that match no key."""

    status, type, code = 401, "authentication_error", "AUTH_1001"


class CsrfRejected(APIError):
    """A cookie-authenticated POST without the session's CSRF token in `X-CSRF-Token`."""

    status, type, code = 403, "permission_error", "AUTH_1003"


class ScopeMissing(APIError):
    """The credentials are valid but lack the scope the route needs (`inference.images`, `models.read`)."""

    status, type, code = 403, "permission_error", "AUTH_1015"


class PlanLacksBenefit(APIError):
    """The credentials' plan does not include the benefit the route needs (`studio_access`)."""

    status, type, code = 403, "permission_error", "VALIDATION_4003"


class RateLimited(APIError):
    """Too many requests in the last minute, or too many generations at once, for this key;
    `Retry-After` says when to try again."""

    status, type, code = 429, "rate_limit_error", "RATE_4290"


class QueueFull(APIError):
    """The model's queue is full: the server as a whole is busy, whatever the key's own limits;
    `Retry-After` says when to try again."""

    status, type, code = 429, "rate_limit_error", "OVERLOAD_4291"


class PayloadTooLarge(APIError):
    """The body is over the server's size limit."""

    status, type, code = 413, "invalid_request_error", "VALIDATION_4130"


class UnsupportedMediaType(APIError):
    """A POST whose `Content-Type` is not JSON."""

    status, type, code = 415, "invalid_request_error", "VALIDATION_4150"


class MalformedBody(APIError):
    """The body is not a JSON object (or not JSON at all)."""

    status, type, code = 400, "invalid_request_error", "VALIDATION_4001"


class PromptMissing(APIError):
    status, type, code = 400, "invalid_request_error", "VALIDATION_4002"


class InvalidParameter(APIError):
    """A parameter has the wrong type, is out of its bounds, or is not a parameter of this API."""

    status, type, code = 400, "invalid_request_error", "VALIDATION_4004"


class ParameterNotSupported(APIError):
    """A model-specific parameter that the chosen model does not use (see frontend/api/parameters.py)."""

    status, type, code = 400, "invalid_request_error", "VALIDATION_4006"


class UnsupportedResponseFormat(APIError):
    """`response_format=url`: images are returned as base64 only, never stored behind a URL."""

    status, type, code = 400, "invalid_request_error", "VALIDATION_4005"


class ClientClosedRequest(APIError):
    """The client disconnected before the answer; its generation was stopped. No client sees this:
    it is what the usage ledger records (499, as nginx logs it)."""

    status, type, code = 499, "invalid_request_error", "CLIENT_4990"


class RouteNotFound(APIError):
    status, type, code = 404, "invalid_request_error", "VALIDATION_4040"


class ProgressNotFound(APIError):
    """No generation of this caller's under that `X-Progress-Id`: not started yet, or long finished."""

    status, type, code = 404, "invalid_request_error", "VALIDATION_4041"


class MethodNotAllowed(APIError):
    status, type, code = 405, "invalid_request_error", "VALIDATION_4050"


class ModelNotFound(APIError):
    status, type, code = 404, "invalid_request_error", "INFERENCE_3001"


class AdapterNotFound(APIError):
    """`lora_weights` names no registered LoRA adapter (`imagegen lora list`)."""

    status, type, code = 404, "invalid_request_error", "INFERENCE_3004"


class AdapterOfAnotherModel(APIError):
    """`lora_weights` names an adapter registered for another base model than the request's."""

    status, type, code = 400, "invalid_request_error", "VALIDATION_4007"


class ContentRejected(APIError):
    """The prompt policy or the image-safety model refused the request; no image is returned.
    400 as OpenAI answers content-policy refusals."""

    status, type, code = 400, "invalid_request_error", "INFERENCE_3208"


class InferenceUnavailable(APIError):
    """Triton cannot be reached or its models are not ready; retrying later can succeed."""

    status, type, code = 503, "server_error", "INFERENCE_3503"


class InferenceFailed(APIError):
    """Triton answered a request with an error."""

    status, type, code = 502, "server_error", "INFERENCE_3502"


class DeadlineExceeded(APIError):
    """The request ran past the server's per-request deadline (queueing included); its work was stopped."""

    status, type, code = 504, "server_error", "TIMEOUT_5040"


class AdminConflict(APIError):
    """A rollout or rollback that conflicts with the routing table: one under way, nothing to roll
    back to, the version already served."""

    status, type, code = 409, "invalid_request_error", "ADMIN_4090"


class AdminRefused(APIError):
    """An admin change that cannot be carried out: a version Triton cannot load or that fails its
    warm-up, a catalog file that does not parse. What was served before is served still."""

    status, type, code = 422, "invalid_request_error", "ADMIN_4220"


class InternalError(APIError):
    status, type, code = 500, "server_error", "SERVER_5000"


def error_response(error: APIError) -> JSONResponse:
    body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(exc)
