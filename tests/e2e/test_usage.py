"""The usage ledger over a socket: `imagegen usage` reports the requests made, the responses'
`energy_cost`/`credits_cost` are its numbers, and the store keeps no secret and no prompt in clear."""

from __future__ import annotations

import json

import openai
import pytest

from tests.harness import API_KEY, Server, imagegen

STUDIO_CREDITS_PER_MEGAPIXEL_STEP = 0.25  # the built-in studio plan's price for every model


def test_usage_reports_each_request_and_its_costs(server: Server) -> None:
    output = imagegen(server, "keys", "create", "--scopes", "inference.images", "--plan", "studio", "--name", "ledger")
    key_id, secret = output.split()[1], output.splitlines()[-1]
    client = openai.OpenAI(api_key=secret, base_url=server.base_url, max_retries=0)
    responses = [client.images.generate(prompt="a lighthouse", size="256x256", n=n) for n in (1, 2)]
    with pytest.raises(openai.BadRequestError):
        client.images.generate(prompt="", size="256x256")

    summary = next(
        s for s in map(json.loads, imagegen(server, "usage", "--json").splitlines()) if s["principal"] == key_id
    )
    assert (summary["name"], summary["requests"], summary["failed"], summary["images"]) == ("ledger", 3, 1, 3)
    costs = [response.model_extra or {} for response in responses]  # fields the SDK does not declare
    energy, credits = [cost["energy_cost"] for cost in costs], [cost["credits_cost"] for cost in costs]
    assert summary["energy_kwh"] == pytest.approx(sum(energy), rel=1e-9) and all(e > 0 for e in energy)
    assert summary["credits"] == pytest.approx(sum(credits), rel=1e-9)
    megapixel_steps = 256 * 256 / 1e6 * 4
    assert credits == pytest.approx([n * STUDIO_CREDITS_PER_MEGAPIXEL_STEP * megapixel_steps for n in (1, 2)])


def test_the_store_holds_no_secret_and_no_prompt_in_clear(server: Server) -> None:
    output = imagegen(server, "keys", "create", "--scopes", "inference.images", "--plan", "studio")
    key_id, secret = output.split()[1], output.splitlines()[-1]
    password = "a password never to be stored"
    imagegen(server, "accounts", "create", "carol", "--plan", "studio", "--password-stdin", stdin=password)
    prompt = "a zeppelin over the Elbe, unique prompt 6f1c"
    for key in (secret, API_KEY):
        openai.OpenAI(api_key=key, base_url=server.base_url).images.generate(prompt=prompt, size="256x256")

    # The write-ahead log holds the latest rows until SQLite checkpoints them: read every file.
    stored = b"".join(path.read_bytes() for path in server.state_dir.glob("imagegen.db*"))
    assert key_id.encode() in stored and b"carol" in stored, "these are the files the server writes"
    for clear in (secret, API_KEY, password, prompt, "Elbe"):
        assert clear.encode() not in stored
