"""The API's OpenAPI 3.1 document, served at `/openapi.json` without credentials.

Schemas come from the pydantic models the routes parse and answer with, and error responses from
the error family, so the document cannot drift from the code; tests/e2e/test_openapi.py checks that
every route is in it and fuzzes the server from it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from frontend import errors
from frontend.api.admin import RolloutRequest
from frontend.api.auth import LoginRequest
from frontend.api.errors import HTTP_ANSWERS
from frontend.api.protocol import MAX_INPUT_IMAGES, ImageRequest, ImageResponse
from frontend.api.streaming import CompletedEvent, ErrorEvent, PartialImageEvent
from frontend.services import Services

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
FORM = "multipart/form-data"
BODY_ERRORS = (errors.MalformedBody, errors.InvalidParameter, errors.PayloadTooLarge, errors.UnsupportedMediaType)
AUTH_ERRORS = (errors.Unauthenticated, errors.ScopeMissing, errors.PlanLacksBenefit)
TRITON_ERRORS = (errors.InferenceFailed, errors.InferenceUnavailable)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*classes: type[errors.APIError]) -> dict[str, Any]:
    """Responses by status, each listing the codes it carries."""
    codes: dict[int, list[str]] = {}
    for cls in classes:
        codes.setdefault(HTTP_ANSWERS[cls].status, []).append(cls.code)
    return {str(status): _json(_ref("Error"), ", ".join(found)) for status, found in sorted(codes.items())}


def _operation(summary: str, ok: dict[str, Any], *failures: type[errors.APIError], **more: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {"200": ok, **_errors(*failures, errors.InternalError)}, **more}


def _schemas(*models: type[BaseModel]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


OBJECT = {"type": "object"}
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def admin_paths() -> dict[str, Any]:
    """The operator's routes (api/admin.py), under the `admin.models` scope."""
    model = [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]
    switched = _json(OBJECT, "The route now followed, whether the old version drained, the seconds taken")
    admin = (errors.Unauthenticated, errors.ScopeMissing)
    refusals = (errors.ModelNotFound, errors.AdminConflict, errors.AdminRefused, *TRITON_ERRORS)
    return {
        "/v1/admin/models/{model}/rollout": {
            "post": _operation(
                "Serve another version of a pipeline, or a canary share of it: load, warm up, switch, drain, unload",
                switched,
                *BODY_ERRORS,
                *admin,
                *refusals,
                parameters=model,
                requestBody={"required": True, "content": {JSON: {"schema": _ref("RolloutRequest")}}},
                security=BEARER,
            )
        },
        "/v1/admin/models/{model}/rollback": {
            "post": _operation(
                "End a canary, else return to the previous version, the same way",
                switched,
                *admin,
                *refusals,
                parameters=model,
                security=BEARER,
            )
        },
        "/v1/admin/status": {
            "get": _operation(
                "What every live frontend serves: its routes and generations in flight per version",
                _json(OBJECT, "The frontends"),
                *admin,
                security=BEARER,
            )
        },
        "/v1/admin/catalog/reload": {
            "post": _operation(
                "Re-read the catalog file and Triton's pipelines",
                _json(OBJECT, "The public model ids"),
                *admin,
                errors.AdminRefused,
                *TRITON_ERRORS,
                security=BEARER,
            )
        },
    }


def job_paths() -> dict[str, Any]:
    """The asynchronous jobs' routes (api/jobs.py), with the image endpoints' credentials."""
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    consume = {"name": "consume", "in": "query", "schema": {"type": "boolean", "default": False}}
    limit = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}
    after = {"name": "after", "in": "query", "schema": {"type": "string"}}
    job = _json(OBJECT, "The job (README, Asynchronous jobs); once succeeded, `result`: the images' response")
    events = {"description": "`job` events, each the job, until it ends", "content": {EVENT_STREAM: {"schema": OBJECT}}}
    one = (*AUTH_ERRORS, errors.JobNotFound)

    def operation(summary: str, ok: dict[str, Any], *failures: type[errors.APIError], **more: Any) -> dict[str, Any]:
        return _operation(summary, ok, *failures, security=BEARER, **more)

    return {
        "/v1/images/jobs": {
            "get": operation(
                "The caller's jobs, newest first",
                _json(OBJECT, "A page of jobs: `data`, `has_more`, `next_cursor`"),
                errors.InvalidParameter,
                *AUTH_ERRORS,
                parameters=[limit, after],
            )
        },
        "/v1/images/jobs/{job_id}": {
            "get": operation(
                "One of the caller's jobs; with `consume`, deleted as it is returned",
                job,
                errors.InvalidParameter,
                *one,
                parameters=[job_id, consume],
            )
        },
        "/v1/images/jobs/{job_id}/cancel": {
            "post": operation("Cancel it: a queued job never runs, a running one stops", job, *one, parameters=[job_id])
        },
        "/v1/images/jobs/{job_id}/events": {
            "get": operation("Its status and progress as Server-Sent Events", events, *one, parameters=[job_id])
        },
    }


ACCEPTED = _json(OBJECT, "With `Prefer: respond-async` or a `:batch` model: the job, queued; `Location` names it")


IMAGE_ERRORS = (
    *BODY_ERRORS,
    errors.PromptMissing,
    errors.UnsupportedResponseFormat,
    errors.ParameterNotSupported,
    errors.ContentRejected,
    *AUTH_ERRORS,
    errors.ModelNotFound,
    errors.AdapterNotFound,
    errors.AdapterOfAnotherModel,
    errors.RateLimited,
    errors.QueueFull,
    *TRITON_ERRORS,
    errors.DeadlineExceeded,
)


def edit_form() -> dict[str, Any]:
    """The edits endpoint's multipart form (api/edits.py): the request's fields as text fields, the
    images and the mask as files."""
    request = ImageRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    fields = {
        name: field for name, field in request["properties"].items() if name not in ("input_images", "mask_image")
    }
    binary = {"type": "string", "format": "binary"}
    return {
        "type": "object",
        "required": ["image", "prompt"],
        "properties": {
            "image": {
                "anyOf": [binary, {"type": "array", "items": binary, "maxItems": MAX_INPUT_IMAGES}],
                "description": "PNG, JPEG or WebP files (`image` or `image[]`): 1, or one per output image",
            },
            "mask": {**binary, "description": "A PNG the first image's size; fully transparent pixels are edited"},
            **fields,
        },
        "additionalProperties": False,
    }


def images_answer() -> dict[str, Any]:
    """An image endpoint's 200: the images as JSON, or with `stream` its Server-Sent Events (api/streaming.py)."""
    events = [_ref("PartialImageEvent"), _ref("CompletedEvent"), _ref("ErrorEvent")]
    return {
        "description": "The images; with `stream`: Server-Sent Events, each one's data one of these events",
        "content": {JSON: {"schema": _ref("ImageResponse")}, EVENT_STREAM: {"schema": {"oneOf": events}}},
    }


def document() -> dict[str, Any]:
    edits = _operation(
        "Edit images: img2img, Kontext's conditioning, or inpainting with a mask (OpenAI's Images API)",
        images_answer(),
        *IMAGE_ERRORS,
        requestBody={
            "required": True,
            "content": {FORM: {"schema": _ref("EditForm")}, JSON: {"schema": _ref("ImageRequest")}},
        },
        security=BEARER,
    )
    images = _operation(
        "Create images from a prompt (OpenAI's Images API)",
        images_answer(),
        *IMAGE_ERRORS,
        requestBody={"required": True, "content": {JSON: {"schema": _ref("ImageRequest")}}},
        security=BEARER,
    )
    for operation in (images, edits):
        operation["responses"]["202"] = ACCEPTED
    progress = _operation(
        "How far one of the caller's generations has got (sent as `X-Progress-Id`)",
        _json(OBJECT, "Its stage and step"),
        *AUTH_ERRORS,
        errors.ProgressNotFound,
        parameters=[{"name": "progress_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        security=BEARER,
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "imagegen", "version": "1", "description": "OpenAI-compatible image generation"},
        "paths": {
            "/v1/images/generations": {"post": images},
            "/v1/images/edits": {"post": edits},
            "/v1/images/progress/{progress_id}": {"get": progress},
            "/v1/models": {
                "get": _operation("The models and their parameters", _json(OBJECT, "The models"), *AUTH_ERRORS)
            },
            "/v1/auth/login": {
                "post": _operation(
                    "Start a browser session",
                    _json(OBJECT, "The session's CSRF token; the session cookie is set"),
                    *BODY_ERRORS,
                    errors.Unauthenticated,
                    errors.RateLimited,
                    requestBody={"required": True, "content": {JSON: {"schema": _ref("LoginRequest")}}},
                )
            },
            "/v1/auth/logout": {
                "post": {
                    "summary": "End the browser session",
                    "responses": {
                        "204": {"description": "Ended"},
                        **_errors(errors.Unauthenticated, errors.CsrfRejected),
                    },
                }
            },
            **job_paths(),
            **admin_paths(),
            "/healthz": {"get": _operation("The process is up", _json(OBJECT, "ok"))},
            "/readyz": {
                "get": _operation(
                    "Triton answers and every model is ready; per model, generations running and queued",
                    _json(OBJECT, "Ready"),
                    errors.InferenceUnavailable,
                )
            },
            "/openapi.json": {"get": _operation("This document", _json(OBJECT, "OpenAPI 3.1"))},
            "/metrics": {
                "get": _operation(
                    "Prometheus metrics (README, Observability); absent when IMAGEGEN_METRICS_PORT is set",
                    {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                )
            },
        },
        "components": {
            "schemas": {
                **_schemas(ImageRequest, ImageResponse, PartialImageEvent, CompletedEvent, ErrorEvent),
                **_schemas(LoginRequest, RolloutRequest),
                "EditForm": edit_form(),
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type", "param", "code"],
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "param": {"type": ["string", "null"]},
                                "code": {"type": "string"},
                            },
                        }
                    },
                },
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(Services.of(request).openapi)
