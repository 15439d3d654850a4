"""`"stream": true`: Server-Sent Events as OpenAI sends them, through the official SDK's typed events;
previews that never change the final image; refusals before the stream as JSON; a client that goes
away mid-stream stops its generation. (A stream past its deadline: tests/e2e/test_faults.py.)"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections import Counter
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types import (
    ImageEditCompletedEvent,
    ImageEditPartialImageEvent,
    ImageGenCompletedEvent,
    ImageGenPartialImageEvent,
)
from PIL import Image

from tests.e2e.test_overload import operator_errors
from tests.harness import API_KEY, Server, denoised_samples, load, progress, triton_paused, wait_until

AUTH = {"Authorization": f"Bearer {API_KEY}"}
MODEL = "flux-schnell"
SMALL: dict[str, Any] = {"model": MODEL, "prompt": "a lighthouse in a storm", "size": "256x256"}
SEEDED: dict[str, Any] = {**SMALL, "seed": 11}


def client(server: Server) -> OpenAI:
    return OpenAI(api_key=API_KEY, base_url=server.base_url, max_retries=0)


def events(server: Server, body: dict[str, Any], headers: dict[str, str] | None = None) -> list[tuple[str, Any]]:
    """(event name, data) of every Server-Sent Event of a streamed request, read as they come."""
    found: list[tuple[str, Any]] = []
    url = f"{server.base_url}/images/generations"
    with httpx.stream(
        "POST", url, json={**body, "stream": True}, headers={**AUTH, **(headers or {})}, timeout=120
    ) as r:
        assert (r.status_code, r.headers["content-type"]) == (200, "text/event-stream; charset=utf-8")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                found.append((str(name), json.loads(line.removeprefix("data: "))))
    return found


def image(b64: str) -> Image.Image:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as opened:
        opened.load()
        return opened


def test_sdk_stream_yields_partial_images_then_the_completed_image(server: Server) -> None:
    stream = client(server).images.generate(**SMALL, stream=True, partial_images=2, extra_body={"seed": 11})
    received = list(stream)
    assert [type(event) for event in received] == [
        ImageGenPartialImageEvent,
        ImageGenPartialImageEvent,
        ImageGenCompletedEvent,
    ]
    partials, completed = received[:2], received[2]
    assert isinstance(completed, ImageGenCompletedEvent)
    assert [event.partial_image_index for event in partials if isinstance(event, ImageGenPartialImageEvent)] == [0, 1]
    for event in received:
        assert (event.size, event.output_format, event.background) == ("256x256", "png", "opaque")
        assert abs(event.created_at - time.time()) < 600
        decoded = image(event.b64_json)
        assert (decoded.format, decoded.size) == ("PNG", (256, 256))
    assert completed.model_extra is not None and completed.model_extra["seed"] == 11
    assert completed.usage.output_tokens == (256 // 8) ** 2
    # Previews are estimates along the way: the first differs from the final image.
    assert partials[0].b64_json != completed.b64_json


def test_sdk_edit_stream_yields_image_edit_events_and_the_json_answers_image(server: Server) -> None:
    source = io.BytesIO()
    Image.new("RGB", (256, 256), (40, 90, 160)).save(source, format="PNG")
    edit: dict[str, Any] = {
        "model": MODEL,
        "image": ("harbour.png", source.getvalue(), "image/png"),
        "prompt": "a red boat in the harbour",
        "extra_body": {"seed": 5, "steps": 8},
    }
    received = list(client(server).images.edit(**edit, stream=True, partial_images=2))
    assert [type(event) for event in received] == [
        ImageEditPartialImageEvent,
        ImageEditPartialImageEvent,
        ImageEditCompletedEvent,
    ]
    assert [event.type for event in received] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    answer = client(server).images.edit(**edit)
    assert answer.data is not None and received[-1].b64_json == answer.data[0].b64_json


@pytest.mark.parametrize("model", [MODEL, "sdxl"])
def test_streamed_images_are_byte_identical_to_the_json_answer(server: Server, model: str) -> None:
    body = {**SEEDED, "model": model, "n": 2, "steps": 4}
    answer = httpx.post(f"{server.base_url}/images/generations", json=body, headers=AUTH, timeout=120)
    assert answer.status_code == 200, answer.text
    completed = [data for name, data in events(server, {**body, "partial_images": 3}) if name.endswith(".completed")]
    assert [event["b64_json"] for event in completed] == [item["b64_json"] for item in answer.json()["data"]]
    assert [event["seed"] for event in completed] == [11, 12]


def test_each_image_of_n_gets_its_partial_images_then_its_completed_event(server: Server) -> None:
    received = events(server, {**SEEDED, "n": 2, "partial_images": 2})
    assert [(name, data.get("partial_image_index"), data["image_index"]) for name, data in received] == [
        ("image_generation.partial_image", 0, 0),
        ("image_generation.partial_image", 0, 1),
        ("image_generation.partial_image", 1, 0),
        ("image_generation.partial_image", 1, 1),
        ("image_generation.completed", None, 0),
        ("image_generation.completed", None, 1),
    ]
    assert all(data["type"] == name for name, data in received)


def test_partial_images_0_sends_only_the_completed_events(server: Server) -> None:
    received = events(server, {**SMALL, "n": 2})
    assert [name for name, _ in received] == ["image_generation.completed"] * 2
    assert all(data["energy_cost"] > 0 for _, data in received)


def test_previews_are_decoded_by_the_vae_and_checked_like_the_final_images(server: Server) -> None:
    """n=2 with 2 partial images: 2 previews of each image and the 2 final images, 6 in all, went
    through the VAE decoder and the image-safety model."""
    models = (f"{MODEL}_vae_decoder", "image_safety")
    before = [denoised_samples(server, name) for name in models]
    events(server, {**SMALL, "n": 2, "partial_images": 2})
    assert [denoised_samples(server, name) - count for name, count in zip(models, before, strict=True)] == [6, 6]


@pytest.mark.parametrize(
    ("change", "status", "code", "param"),
    [
        ({"partial_images": 4}, 400, "VALIDATION_4004", "partial_images"),
        ({"partial_images": -1}, 400, "VALIDATION_4004", "partial_images"),
        ({"stream": False, "partial_images": 2}, 400, "VALIDATION_4004", "partial_images"),
        ({"stream": "yes"}, 400, "VALIDATION_4004", "stream"),
        ({"model": "no-such-model"}, 404, "INFERENCE_3001", "model"),
        ({"steps": 101}, 400, "VALIDATION_4004", "steps"),
    ],
)
def test_a_stream_refused_before_it_starts_is_a_json_error(
    server: Server, change: dict[str, Any], status: int, code: str, param: str
) -> None:
    body = {**SEEDED, "stream": True, "partial_images": 2, **change}
    response = httpx.post(f"{server.base_url}/images/generations", json=body, headers=AUTH, timeout=60)
    assert (response.status_code, response.headers["content-type"]) == (status, "application/json")
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (code, param)


def test_the_sdk_raises_a_stream_refusal_as_its_status_error(server: Server) -> None:
    with pytest.raises(openai.AuthenticationError):
        OpenAI(api_key="sk-wrong", base_url=server.base_url, max_retries=0).images.generate(**SMALL, stream=True)
    with pytest.raises(openai.NotFoundError) as refused:
        client(server).images.generate(**{**SMALL, "model": "no-such-model"}, stream=True, partial_images=1)
    assert refused.value.code == "INFERENCE_3001"


def test_a_stream_whose_first_preview_is_unsafe_shows_nothing(strict_server: Server) -> None:
    """The strict server's safety check refuses every image: the first preview is refused before the
    stream starts, so not even a preview of an image that would be refused is sent."""
    body = {**SMALL, "stream": True, "partial_images": 3}
    response = httpx.post(f"{strict_server.base_url}/images/generations", json=body, headers=AUTH, timeout=60)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "INFERENCE_3208")
    assert "b64_json" not in response.text


def test_a_full_queue_refuses_a_stream_with_json_429(guarded_server: Server) -> None:
    """guarded_server has 2 running and 2 queued places per model: held full with Triton paused."""
    answered: list[int] = []

    def send(index: int) -> None:
        body = {**SMALL, "prompt": f"queued stream {index}", "stream": True}
        url = f"{guarded_server.base_url}/images/generations"
        answered.append(httpx.post(url, json=body, headers=AUTH, timeout=120).status_code)

    senders = [threading.Thread(target=send, args=(index,)) for index in range(4)]
    with triton_paused(guarded_server):
        for sender in senders:
            sender.start()
        wait_until(lambda: load(guarded_server, MODEL) == {"running": 2, "queued": 2}, 60, "the places taken")
        body = {**SMALL, "stream": True, "partial_images": 1}
        refused = httpx.post(f"{guarded_server.base_url}/images/generations", json=body, headers=AUTH, timeout=60)
        assert (refused.status_code, refused.json()["error"]["code"]) == (429, "OVERLOAD_4291")
        assert int(refused.headers["Retry-After"]) > 0
    for sender in senders:
        sender.join()
    assert answered == [200] * 4


def test_a_client_that_disconnects_mid_stream_stops_its_generation(server: Server) -> None:
    denoiser = f"{MODEL}_transformer"
    samples, errors = denoised_samples(server, denoiser), operator_errors(server)
    body = json.dumps({**SEEDED, "steps": 100, "stream": True, "partial_images": 3})
    request = (
        f"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"X-Progress-Id: disconnected-stream\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    with socket.create_connection(("127.0.0.1", server.port)) as connection:
        connection.sendall(request.encode())
        received = b""
        while b"event: image_generation.partial_image" not in received:  # the first preview: step 25 of 100
            chunk = connection.recv(65536)
            assert chunk, f"the stream ended before its first preview: {received[:300]!r}"
            received += chunk
        # Triton paused: the generation is mid-way when the client goes, whatever the machine's speed.
        with triton_paused(server):
            connection.shutdown(socket.SHUT_RDWR)
            connection.close()
            disconnected = time.monotonic()
            # Freed with Triton still paused: by the disconnect, not by the work's end (it cannot
            # end) nor by the deadline (300 s). How soon is printed, not bounded: that is the machine's.
            wait_until(lambda: load(server, MODEL) == {"running": 0, "queued": 0}, 30, "the slot freed")
            freed_after = time.monotonic() - disconnected
    ran = progress(server, "disconnected-stream")
    assert ran is not None and ran["stage"] == "failed"
    print(f"slot free {freed_after * 1000:.0f} ms after the client left mid-stream, at step {ran['step']} of 100")
    # Its remaining steps never ran: those it had run and at most the one in Triton when it stopped.
    assert denoised_samples(server, denoiser) - samples <= ran["step"] + 1 < 100
    assert operator_errors(server) - errors == Counter({"CLIENT_4990": 1})
