"""Hostile input gets a 4xx with a documented code, never a 5xx and never a hung request
(guarded_server: a 1 MiB body limit, a two-256x256-image pixel budget).

Input images that are not images, or decompression bombs, are tests/e2e/test_parameters.py's.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable

import httpx
import pytest

from frontend.api.protocol import MAX_PROMPT_CHARACTERS
from tests.harness import API_KEY, Server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
VALID = {"model": "flux-schnell", "prompt": "a red fox", "size": "256x256"}
LIMIT = 1024 * 1024


def post(server: Server, content: bytes | Iterable[bytes], content_type: str = "application/json") -> httpx.Response:
    headers = {**AUTH, "Content-Type": content_type}
    return httpx.post(f"{server.base_url}/images/generations", content=content, headers=headers, timeout=60)


def post_json(server: Server, body: dict[str, object]) -> httpx.Response:
    """json.dumps escapes what httpx would not send: a lone surrogate becomes `\\ud800`."""
    return post(server, json.dumps(body).encode())


def error_of(response: httpx.Response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["param"]


def test_a_body_over_the_limit_is_413_by_its_length(guarded_server: Server) -> None:
    huge_image = base64.b64encode(bytes(LIMIT)).decode()
    response = post_json(guarded_server, {**VALID, "input_images": [huge_image]})
    assert error_of(response) == (413, "VALIDATION_4130", None)


def test_a_chunked_body_over_the_limit_is_413_once_it_passes_it(guarded_server: Server) -> None:
    def chunks() -> Iterable[bytes]:
        yield b'{"prompt": "'
        for _ in range(2 * LIMIT // 65536):
            yield b"a" * 65536
        yield b'"}'

    response = post(guarded_server, chunks())
    assert error_of(response) == (413, "VALIDATION_4130", None)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_body_that_is_not_json_by_its_content_type_is_415(guarded_server: Server, content_type: str) -> None:
    response = post(guarded_server, b'{"prompt": "a red fox"}', content_type)
    assert error_of(response) == (415, "VALIDATION_4150", None)


def test_deeply_nested_json_is_400(guarded_server: Server) -> None:
    response = post(guarded_server, b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert error_of(response) == (400, "VALIDATION_4001", None)


@pytest.mark.parametrize(
    "text", ["a\x00fox", "a\x1bfox", "a\x7ffox", "a\ud800fox"], ids=["nul", "esc", "del", "surrogate"]
)
@pytest.mark.parametrize("param", ["prompt", "negative_prompt"])
def test_control_characters_in_a_prompt_are_400(guarded_server: Server, text: str, param: str) -> None:
    response = post_json(guarded_server, {**VALID, param: text})
    assert error_of(response) == (400, "VALIDATION_4004", param)


def test_tabs_and_newlines_in_a_prompt_are_text(guarded_server: Server) -> None:
    assert post_json(guarded_server, {**VALID, "prompt": "a red fox,\n\tin snow"}).status_code == 200


def test_a_prompt_over_the_character_limit_is_400_and_a_long_one_is_served(guarded_server: Server) -> None:
    too_long = post_json(guarded_server, {**VALID, "prompt": "fox " * (MAX_PROMPT_CHARACTERS // 4) + "!"})
    assert error_of(too_long) == (400, "VALIDATION_4004", "prompt")
    # Far past every encoder's token window: each reads its first tokens, as diffusers does.
    long = post_json(guarded_server, {**VALID, "prompt": "fox " * (MAX_PROMPT_CHARACTERS // 4 - 1)})
    assert long.status_code == 200


def test_a_request_over_the_pixel_budget_is_400(guarded_server: Server) -> None:
    assert post_json(guarded_server, {**VALID, "n": 2}).status_code == 200
    response = post_json(guarded_server, {**VALID, "n": 3})
    assert error_of(response) == (400, "VALIDATION_4004", "n")
    response = post_json(guarded_server, {**VALID, "size": "512x512"})
    assert error_of(response) == (400, "VALIDATION_4004", "n")


def test_long_prompt_is_served_truncated_and_says_so(server: Server) -> None:
    long_prompt = "a gnarled oak tree in a misty meadow, " * 40  # far past CLIP's 77 tokens
    truncated = post_json(server, {"prompt": long_prompt, "size": "256x256"})
    short = post_json(server, {"prompt": "a red fox", "size": "256x256"})
    assert truncated.status_code == 200 and truncated.headers["x-prompt-truncated"] == "true"
    assert short.status_code == 200 and "x-prompt-truncated" not in short.headers
