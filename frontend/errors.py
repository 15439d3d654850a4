"""The errors a client can be told of, one class each, below every layer that raises them.

Nothing here knows HTTP: `frontend/api/errors.py` alone maps each class to its status and OpenAI's
error envelope. `code` is the error's documented identity (README, "Errors"), which the ledger and
the access log record too.
"""

from __future__ import annotations

from typing import ClassVar


class APIError(Exception):
    """A failure the client is answered: `message` is safe to show, `param` names the request field
    at fault, `retry_after` (seconds) says when trying again can succeed."""

    code: ClassVar[str]

    def __init__(self, message: str, *, param: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after


class Unauthenticated(APIError):
    """No credentials, or credentials that match no key."""

    code = "AUTH_1001"


class CsrfRejected(APIError):
    """A cookie-authenticated POST without the session's CSRF token in `X-CSRF-Token`."""

    code = "AUTH_1003"


class ScopeMissing(APIError):
    """The credentials are valid but lack the scope the route needs (`inference.images`, `models.read`)."""

    code = "AUTH_1015"


class PlanLacksBenefit(APIError):
    """The credentials' plan does not include the benefit the route needs (`studio_access`)."""

    code = "VALIDATION_4003"


class RateLimited(APIError):
    """Too many requests in the last minute, or too many generations at once, for this key."""

    code = "RATE_4290"


class QueueFull(APIError):
    """The model's queue is full: the server as a whole is busy, whatever the key's own limits."""

    code = "OVERLOAD_4291"


class PayloadTooLarge(APIError):
    """The body is over the server's size limit."""

    code = "VALIDATION_4130"


class UnsupportedMediaType(APIError):
    """A POST whose `Content-Type` is not JSON."""

    code = "VALIDATION_4150"


class MalformedBody(APIError):
    """The body is not a JSON object (or not JSON at all)."""

    code = "VALIDATION_4001"


class PromptMissing(APIError):
    code = "VALIDATION_4002"


class InvalidParameter(APIError):
    """A parameter has the wrong type, is out of its bounds, or is not a parameter of this API."""

    code = "VALIDATION_4004"


class ParameterNotSupported(APIError):
    """A model-specific parameter that the chosen model does not use (see frontend/api/parameters.py)."""

    code = "VALIDATION_4006"


class UnsupportedResponseFormat(APIError):
    """`response_format=url`: images are returned as base64 only, never stored behind a URL."""

    code = "VALIDATION_4005"


class ClientClosedRequest(APIError):
    """The client disconnected before the answer; its generation was stopped. No client sees this:
    it is what the usage ledger records."""

    code = "CLIENT_4990"


class RouteNotFound(APIError):
    code = "VALIDATION_4040"


class ProgressNotFound(APIError):
    """No generation of this caller's under that `X-Progress-Id`: not started yet, or long finished."""

    code = "VALIDATION_4041"


class JobNotFound(APIError):
    """No job of this caller's under that id: never submitted, another caller's, consumed or forgotten."""

    code = "VALIDATION_4042"


class MethodNotAllowed(APIError):
    code = "VALIDATION_4050"


class ModelNotFound(APIError):
    code = "INFERENCE_3001"


class AdapterNotFound(APIError):
    """`lora_weights` names no registered LoRA adapter (`imagegen lora list`)."""

    code = "INFERENCE_3004"


class AdapterOfAnotherModel(APIError):
    """`lora_weights` names an adapter registered for another base model than the request's."""

    code = "VALIDATION_4007"


class ContentRejected(APIError):
    """The prompt policy or the image-safety model refused the request; no image is returned."""

    code = "INFERENCE_3208"


class InferenceUnavailable(APIError):
    """Triton cannot be reached or its models are not ready; retrying later can succeed."""

    code = "INFERENCE_3503"


class InferenceFailed(APIError):
    """Triton answered a request with an error."""

    code = "INFERENCE_3502"


class DeadlineExceeded(APIError):
    """The request ran past the server's per-request deadline (queueing included); its work was stopped."""

    code = "TIMEOUT_5040"


class AdminConflict(APIError):
    """A rollout or rollback that conflicts with the routing table: one under way, nothing to roll
    back to, the version already served."""

    code = "ADMIN_4090"


class AdminRefused(APIError):
    """An admin change that cannot be carried out: a version Triton cannot load or that fails its
    warm-up, a catalog file that does not parse. What was served before is served still."""

    code = "ADMIN_4220"


class InternalError(APIError):
    """Anything unexpected: its traceback goes to the log, never to the client."""

    code = "SERVER_5000"
