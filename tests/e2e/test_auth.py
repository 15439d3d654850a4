"""API keys over a socket with the real `openai` client: each refusal, in the documented order, and
the per-key rate limits. Keys and plans are made with `imagegen` beside the running server."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.harness import API_KEY, Server, imagegen, progress, triton_paused, wait_until

VALID: dict[str, Any] = {"prompt": "a red fox", "size": "256x256"}


def create_key(server: Server, scopes: str, plan: str) -> tuple[str, str]:
    """(id, secret) of a new key, through `imagegen keys create`."""
    lines = imagegen(server, "keys", "create", "--scopes", scopes, "--plan", plan).splitlines()
    assert lines[-1].startswith("sk-ig-") and " " not in lines[-1], "the secret is alone on the last line"
    return lines[0].split()[1], lines[-1]


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str]:
    """Secrets by what they are for."""
    imagegen(server, "plans", "create", "tight", "--benefits", "studio_access", "--requests-per-minute", "2")
    imagegen(server, "plans", "create", "single", "--benefits", "studio_access", "--concurrent-generations", "1")
    revoked_id, revoked = create_key(server, "inference.images", "studio")
    imagegen(server, "keys", "revoke", revoked_id)
    return {
        "revoked": revoked,
        "no images scope, free plan": create_key(server, "models.read", "free")[1],
        "free plan": create_key(server, "inference.images,models.read", "free")[1],
        "tight": create_key(server, "inference.images", "tight")[1],
        "single": create_key(server, "inference.images", "single")[1],
    }


def client(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=server.base_url, max_retries=0)


@pytest.mark.parametrize(
    ("key", "body", "error", "code"),
    [
        ("sk-ig-not-a-key-0123456789abcdefghij", VALID, openai.AuthenticationError, "AUTH_1001"),
        ("revoked", VALID, openai.AuthenticationError, "AUTH_1001"),
        # The scope is checked before the plan, and both before the body.
        ("no images scope, free plan", {**VALID, "prompt": ""}, openai.PermissionDeniedError, "AUTH_1015"),
        ("free plan", {**VALID, "prompt": ""}, openai.PermissionDeniedError, "VALIDATION_4003"),
        (API_KEY, {**VALID, "prompt": ""}, openai.BadRequestError, "VALIDATION_4002"),
        (API_KEY, {**VALID, "model": "no-such-model"}, openai.NotFoundError, "INFERENCE_3001"),
    ],
)
def test_refusals_come_in_the_documented_order(
    server: Server, keys: dict[str, str], key: str, body: dict[str, Any], error: type[openai.APIStatusError], code: str
) -> None:
    with pytest.raises(error) as refused:
        client(server, keys.get(key, key)).images.generate(**body)
    assert refused.value.code == code
    assert "data" not in refused.value.response.json()


def test_keys_list_shows_prefixes_and_revocations_never_secrets(server: Server, keys: dict[str, str]) -> None:
    listing = imagegen(server, "keys", "list")
    revoked = next(line for line in listing.splitlines() if keys["revoked"][:14] in line)
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d", revoked)) == 2, "created, then revoked"
    assert not any(secret in listing for secret in keys.values())


def test_no_credentials_is_401(server: Server) -> None:
    response = httpx.post(f"{server.base_url}/images/generations", json=VALID)
    assert (response.status_code, response.json()["error"]["code"]) == (401, "AUTH_1001")


def test_listing_models_needs_the_models_read_scope(server: Server, keys: dict[str, str]) -> None:
    assert {model.id for model in client(server, keys["free plan"]).models.list()} >= {"flux-schnell"}
    _, images_only = create_key(server, "inference.images", "studio")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client(server, images_only).models.list()
    assert refused.value.code == "AUTH_1015"


def test_requests_beyond_the_per_minute_limit_get_429_with_retry_after(server: Server, keys: dict[str, str]) -> None:
    tight = client(server, keys["tight"])
    for _ in range(2):
        assert tight.images.generate(**VALID).data
    with pytest.raises(openai.RateLimitError) as refused:
        tight.images.generate(**VALID)
    assert refused.value.code == "RATE_4290"
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60


def test_generations_beyond_the_concurrency_limit_get_429(server: Server, keys: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {keys['single']}"}

    def generate(progress_id: str | None = None) -> httpx.Response:
        named = headers if progress_id is None else {**headers, "X-Progress-Id": progress_id}
        return httpx.post(f"{server.base_url}/images/generations", json=VALID, headers=named, timeout=120)

    # Triton paused: the first generation holds the key's one place until it resumes.
    with ThreadPoolExecutor(1) as pool, triton_paused(server):
        first = pool.submit(generate, "holds-the-only-place")
        wait_until(lambda: progress(server, "holds-the-only-place", keys["single"]), 60, "the first one admitted")
        refused = [generate(), generate()]
    assert first.result().status_code == 200
    assert [(r.status_code, r.json()["error"]["code"], r.headers["retry-after"]) for r in refused] == [
        (429, "RATE_4290", "1")
    ] * 2
    assert generate().status_code == 200, "the place is back once the first one ended"
