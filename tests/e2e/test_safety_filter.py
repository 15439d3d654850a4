"""The safety filter over a socket: a refused prompt and a refused image each give INFERENCE_3208
and no image, and the ledger records what the refused image cost to compute."""

from __future__ import annotations

import json

import openai
import pytest

from tests.harness import API_KEY, Server, imagegen


def generate(server: Server, prompt: str) -> openai.BadRequestError:
    client = openai.OpenAI(api_key=API_KEY, base_url=server.base_url, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(prompt=prompt, size="256x256")
    assert "data" not in refused.value.response.json()
    return refused.value


def operator_usage(server: Server) -> dict[str, float]:
    """The ledger's summary for the operator's key (the key named `operator`), whatever other keys and
    accounts have used the server."""
    summaries = [json.loads(line) for line in imagegen(server, "usage", "--json").splitlines()]
    operator = [summary for summary in summaries if summary["name"] == "operator"]
    assert len(operator) <= 1, operator
    return operator[0] if operator else {"requests": 0, "images": 0, "energy_kwh": 0.0, "credits": 0.0}


def test_a_prompt_the_policy_refuses_gets_3208_before_any_work(strict_server: Server) -> None:
    before = operator_usage(strict_server)
    refused = generate(strict_server, "A still life with the Forbidden  Fruit")
    assert (refused.code, refused.param) == ("INFERENCE_3208", "prompt")
    after = operator_usage(strict_server)
    assert (after["requests"], after["energy_kwh"]) == (before["requests"] + 1, before["energy_kwh"])


def test_an_image_the_safety_model_refuses_gets_3208_and_is_not_returned(strict_server: Server) -> None:
    before = operator_usage(strict_server)
    refused = generate(strict_server, "a bowl of pears")
    assert (refused.code, refused.param) == ("INFERENCE_3208", None)
    after = operator_usage(strict_server)
    assert (after["images"], after["credits"]) == (0, 0.0)
    assert after["energy_kwh"] > before["energy_kwh"], "the refused image was computed, and its energy recorded"
