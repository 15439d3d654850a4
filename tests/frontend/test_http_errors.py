"""The mapping of the error family to HTTP (frontend/api/errors.py) is exhaustive, and an error
answers in OpenAI's envelope with its status, its code and its Retry-After."""

from __future__ import annotations

import json

from frontend import errors
from frontend.api.errors import HTTP_ANSWERS, error_response


def test_every_error_class_has_its_http_answer() -> None:
    family, pending = set(), [errors.APIError]
    while pending:
        subclasses = pending.pop().__subclasses__()
        family.update(subclasses)
        pending += subclasses
    assert family == set(HTTP_ANSWERS)


def test_an_error_answers_in_openais_envelope_with_its_retry_after() -> None:
    response = error_response(errors.QueueFull("The server is busy.", retry_after=2))
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"
    assert json.loads(response.body) == {
        "error": {"message": "The server is busy.", "type": "rate_limit_error", "param": None, "code": "OVERLOAD_4291"}
    }
