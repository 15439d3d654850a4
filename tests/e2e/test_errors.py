"""Bad input gets a 4xx in OpenAI's error envelope with our documented code, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.harness import API_KEY, Server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
VALID = {"prompt": "a red fox", "size": "256x256"}


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"size": "256x256"}, 400, "VALIDATION_4002", "prompt"),
        ({**VALID, "prompt": ""}, 400, "VALIDATION_4002", "prompt"),
        ({**VALID, "model": "no-such-model"}, 404, "INFERENCE_3001", "model"),
        ({**VALID, "n": 0}, 400, "VALIDATION_4004", "n"),
        ({**VALID, "n": 11}, 400, "VALIDATION_4004", "n"),
        ({**VALID, "n": "3"}, 400, "VALIDATION_4004", "n"),
        ({**VALID, "size": "banana"}, 400, "VALIDATION_4004", "size"),
        ({**VALID, "response_format": "url"}, 400, "VALIDATION_4005", "response_format"),
        ({**VALID, "steps": 0}, 400, "VALIDATION_4004", "steps"),
        ({**VALID, "steps": 1000}, 400, "VALIDATION_4004", "steps"),
        ({**VALID, "seed": -1}, 400, "VALIDATION_4004", "seed"),
        ({"prompt": "a red fox", "width": 100, "height": 256}, 400, "VALIDATION_4004", "width"),
        ({"prompt": "a red fox", "width": 256}, 400, "VALIDATION_4004", "width"),
        ({**VALID, "quality": "ultra"}, 400, "VALIDATION_4004", "quality"),
        ({**VALID, "stpes": 4}, 400, "VALIDATION_4004", "stpes"),
    ],
)
def test_invalid_body_gets_its_code(server: Server, body: dict[str, Any], status: int, code: str, param: str) -> None:
    response = httpx.post(f"{server.base_url}/images/generations", json=body, headers=AUTH)
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["message"]


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b"\xff\xfe", b""])
def test_body_that_is_not_a_json_object_is_refused(server: Server, content: bytes) -> None:
    response = httpx.post(
        f"{server.base_url}/images/generations",
        content=content,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_4001"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"x-api-key": "wrong"}, {"Authorization": "Basic abc"}]
)
def test_missing_or_wrong_key_is_401(server: Server, headers: dict[str, str]) -> None:
    response = httpx.post(f"{server.base_url}/images/generations", json=VALID, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AUTH_1001"


def test_url_response_format_raises_in_the_sdk_with_the_reason(server: Server) -> None:
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url)
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="a red fox", size="256x256", response_format="url")
    assert "base64" in str(raised.value)


def test_unknown_route_and_method_use_the_envelope(server: Server) -> None:
    assert httpx.get(f"{server.base_url}/nothing-here").json()["error"]["code"] == "VALIDATION_4040"
    response = httpx.get(f"{server.base_url}/images/generations", headers=AUTH)
    assert (response.status_code, response.json()["error"]["code"]) == (405, "VALIDATION_4050")
