"""POST /v1/images/edits end to end, and the gpt-image parameters and response fields of both image
endpoints: the official Python and Node SDKs, curl, and the session server's real Triton."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from openai import BadRequestError, OpenAI
from PIL import Image

from tests.e2e.images import AUTH, decode, png_base64, post
from tests.harness import API_KEY, Server, wait_until

PROMPT = "The same harbor at night"
MODEL = "flux-schnell"
SIDE = 256
EXTRA = {"seed": 7, "steps": 4}
"""Model-specific fields the SDK sends through `extra_body` (form fields in a multipart edit)."""


def picture(width: int = SIDE, height: int = SIDE, shift: int = 0) -> Image.Image:
    """A deterministic RGB picture with structure for img2img to keep."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(x + shift) % 256, (y * 2) % 256, ((x + y) // 2 + shift) % 256], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8), mode="RGB")


def encoded(image: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def mask(width: int = SIDE, height: int = SIDE) -> Image.Image:
    """OpenAI's convention: fully transparent pixels (the left half here) mark where to edit."""
    alpha = np.full((height, width), 255, dtype=np.uint8)
    alpha[:, : width // 2] = 0
    return Image.fromarray(np.dstack([np.zeros((height, width, 3), np.uint8), alpha]), mode="RGBA")


def client(server: Server) -> OpenAI:
    return OpenAI(api_key=API_KEY, base_url=server.base_url, max_retries=0)


def edit_form(server: Server, data: dict[str, Any], files: list[tuple[str, tuple[str, bytes, str]]]) -> httpx.Response:
    return httpx.post(f"{server.base_url}/images/edits", data=data, files=files, headers=AUTH, timeout=120)


def generated(server: Server, body: dict[str, Any]) -> list[str]:
    response = post(server, {"model": MODEL, "prompt": PROMPT, **EXTRA, **body})
    assert response.status_code == 200, response.text
    return [item["b64_json"] for item in response.json()["data"]]


def assert_refused(response: httpx.Response, status: int, code: str, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error


@pytest.mark.parametrize("model", ["flux-schnell", "flux-dev", "sdxl", "flux-kontext"])
def test_sdk_edit_of_one_image_is_the_generations_input_images_image(server: Server, model: str) -> None:
    """img2img (FLUX.1-schnell, -dev, SDXL) and Kontext's conditioning, as `input_images` runs them,
    so their parity with diffusers (test_generations, test_sdxl, test_kontext) carries over."""
    source = encoded(picture())
    response = client(server).images.edit(
        model=model, image=("harbor.png", source, "image/png"), prompt=PROMPT, extra_body=EXTRA
    )
    assert response.data is not None and len(response.data) == 1
    expected = generated(server, {"model": model, "input_images": [base64.b64encode(source).decode()]})
    assert [response.data[0].b64_json] == expected
    if model != "flux-kontext":  # size auto: the image's own (Kontext's: its conditioning size)
        assert decode(response.data[0].b64_json or "").size == (SIDE, SIDE)


def test_sdk_edit_of_a_list_of_images_starts_image_i_from_input_i(server: Server) -> None:
    sources = [encoded(picture(shift=0)), encoded(picture(shift=90))]
    response = client(server).images.edit(
        model=MODEL,
        image=[(f"harbor{i}.png", source, "image/png") for i, source in enumerate(sources)],
        prompt=PROMPT,
        n=2,
        extra_body=EXTRA,
    )
    assert response.data is not None
    expected = generated(server, {"n": 2, "input_images": [base64.b64encode(s).decode() for s in sources]})
    assert [item.b64_json for item in response.data] == expected


def test_sdk_edit_with_a_mask_is_the_generations_masked_image(server: Server) -> None:
    source, edit_mask = encoded(picture()), encoded(mask())
    response = client(server).images.edit(
        model=MODEL,
        image=("harbor.png", source, "image/png"),
        mask=("mask.png", edit_mask, "image/png"),
        prompt=PROMPT,
        extra_body=EXTRA,
    )
    assert response.data is not None
    body = {"input_images": [base64.b64encode(source).decode()], "mask_image": base64.b64encode(edit_mask).decode()}
    assert [response.data[0].b64_json] == generated(server, body)


def test_json_edit_takes_openais_image_names(server: Server) -> None:
    source = png_base64(picture())
    body = {"model": MODEL, "prompt": PROMPT, **EXTRA, "images": [{"image_url": f"data:image/png;base64,{source}"}]}
    response = httpx.post(f"{server.base_url}/images/edits", json=body, headers=AUTH, timeout=120)
    assert response.status_code == 200, response.text
    assert [item["b64_json"] for item in response.json()["data"]] == generated(server, {"input_images": [source]})


def test_node_sdk_edit_with_to_file(server: Server, tmp_path: Path) -> None:
    picture().save(tmp_path / "harbor.png")
    example = Path(__file__).parent / "node" / "edit_example.mjs"
    env = {**os.environ, "IMAGEGEN_API_KEY": API_KEY, "IMAGEGEN_BASE_URL": server.base_url}
    command = ["node", str(example), str(tmp_path / "harbor.png"), str(tmp_path / "night.png")]
    printed = subprocess.run(command, check=True, env=env, timeout=120, capture_output=True, text=True).stdout
    with Image.open(tmp_path / "night.png") as image:
        assert (image.format, image.size) == ("PNG", (SIDE, SIDE))
    assert json.loads(printed)["size"] == f"{SIDE}x{SIDE}"


def test_curl_edit_with_an_image_array_and_a_mask(server: Server, tmp_path: Path) -> None:
    picture().save(tmp_path / "a.png")
    mask().save(tmp_path / "m.png")
    command = ["curl", "-sS", "-g", f"{server.base_url}/images/edits", "-H", f"Authorization: Bearer {API_KEY}"]
    command += ["-F", "image[]=@a.png", "-F", "mask=@m.png", "-F", f"model={MODEL}", "-F", f"prompt={PROMPT}"]
    command += ["-F", "steps=2", "-F", "output_format=webp", "-F", "output_compression=20"]
    output = subprocess.run(command, check=True, capture_output=True, cwd=tmp_path).stdout
    body = json.loads(output)
    assert decode(body["data"][0]["b64_json"]).format == "WEBP"
    assert body["output_format"] == "webp"


def test_response_fields_on_both_endpoints(server: Server) -> None:
    body = {"model": MODEL, "prompt": PROMPT, "size": f"{SIDE}x{SIDE}", "n": 2, "quality": "low"}
    answer = post(server, body).json()
    latent_positions = (SIDE // 8) ** 2
    assert {key: answer[key] for key in ("size", "quality", "output_format", "background")} == {
        "size": f"{SIDE}x{SIDE}",
        "quality": "low",
        "output_format": "png",
        "background": "opaque",
    }
    usage = answer["usage"]
    assert usage["output_tokens"] == 2 * latent_positions
    assert usage["input_tokens_details"]["image_tokens"] == 0
    assert usage["input_tokens"] == usage["input_tokens_details"]["text_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert answer["energy_cost"] > 0

    edited = edit_form(
        server,
        {"model": MODEL, "prompt": PROMPT, "steps": "1"},
        [("image", ("a.png", encoded(picture()), "image/png"))],
    )
    assert edited.status_code == 200, edited.text
    fields = edited.json()
    assert (fields["size"], fields["quality"], fields["background"]) == (f"{SIDE}x{SIDE}", "medium", "opaque")
    assert fields["usage"]["input_tokens_details"]["image_tokens"] == latent_positions


def test_sdk_reads_the_response_fields(server: Server) -> None:
    response = client(server).images.generate(
        model=MODEL,
        prompt=PROMPT,
        size="256x256",
        quality="high",
        background="opaque",
        moderation="low",
        safety_identifier="user-1234",
    )
    assert (response.size, response.quality, response.background, response.output_format) == (
        "256x256",
        "high",
        "opaque",
        "png",
    )
    assert response.usage is not None and response.usage.output_tokens == (SIDE // 8) ** 2


@pytest.mark.parametrize(("quality", "steps"), [("low", 2), ("medium", 4), ("hd", 8), ("xhigh", 12)])
def test_quality_tiers_are_step_counts(server: Server, quality: str, steps: int) -> None:
    body = {"model": MODEL, "prompt": PROMPT, "size": "256x256", "seed": 3}
    by_tier = post(server, {**body, "quality": quality}).json()["data"]
    by_steps = post(server, {**body, "steps": steps}).json()["data"]
    assert by_tier == by_steps


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("background", "transparent", "VALIDATION_4004"),
        ("output_format", "gif", "VALIDATION_4004"),
        ("complexity", "high", "VALIDATION_4006"),
        ("frame_count", 4, "VALIDATION_4006"),
        ("quality", "ultra", "VALIDATION_4004"),
    ],
)
def test_unsupported_gpt_image_parameters_are_refused_by_name(
    server: Server, field: str, value: Any, code: str
) -> None:
    generation = post(server, {"model": MODEL, "prompt": PROMPT, field: value})
    assert_refused(generation, 400, code, field)
    edit = edit_form(
        server, {"prompt": PROMPT, field: str(value)}, [("image", ("a.png", encoded(picture()), "image/png"))]
    )
    assert_refused(edit, 400, code, field)


def test_sdk_edit_with_svg_options_is_refused_naming_svg(server: Server) -> None:
    with pytest.raises(BadRequestError) as refused:
        client(server).images.edit(
            model=MODEL, image=("a.png", encoded(picture()), "image/png"), prompt=PROMPT, svg={"model": "any"}
        )
    assert refused.value.body is not None
    assert refused.value.body["param"] == "svg"  # type: ignore[index]


def test_edit_refusals_name_the_field(server: Server) -> None:
    png = ("a.png", encoded(picture()), "image/png")
    no_image = [("prompt", (None, PROMPT.encode(), None))]  # multipart, but no file
    assert_refused(edit_form(server, {}, no_image), 400, "VALIDATION_4004", "image")  # type: ignore[arg-type]
    gif = ("a.gif", encoded(picture(), "GIF"), "image/gif")
    assert_refused(edit_form(server, {"prompt": PROMPT}, [("image", gif)]), 400, "VALIDATION_4004", "image")
    seventeen = [("image[]", png)] * 17
    assert_refused(edit_form(server, {"prompt": PROMPT}, seventeen), 400, "VALIDATION_4004", "image")
    three = [("image[]", png)] * 3  # neither 1 nor one per output image (n=2)
    assert_refused(edit_form(server, {"prompt": PROMPT, "n": "2"}, three), 400, "VALIDATION_4004", "input_images")
    assert_refused(edit_form(server, {"prompt": PROMPT, "n": "two"}, [("image", png)]), 400, "VALIDATION_4004", "n")
    assert_refused(
        edit_form(server, {"prompt": PROMPT, "stream": "maybe"}, [("image", png)]), 400, "VALIDATION_4004", "stream"
    )
    twice = [("image", png), ("lora_weights[]", (None, b"ink", None)), ("lora_weights[]", (None, b"ink", None))]
    listed = edit_form(server, {"prompt": PROMPT}, twice)  # type: ignore[arg-type]
    assert_refused(listed, 400, "VALIDATION_4004", "lora_weights")  # a list of two: "names an adapter twice"
    assert "twice" in listed.json()["error"]["message"]
    big_mask = ("m.png", b"\0" * (4 * 1024 * 1024 + 1), "image/png")
    assert_refused(
        edit_form(server, {"prompt": PROMPT}, [("image", png), ("mask", big_mask)]), 400, "VALIDATION_4004", "mask"
    )


def test_form_bounds_refuse_before_generating(server: Server) -> None:
    png = ("a.png", encoded(picture()), "image/png")
    eighteen = [("image[]", png)] * 18
    assert_refused(edit_form(server, {"prompt": PROMPT}, eighteen), 400, "VALIDATION_4001", None)
    long_field = {"prompt": PROMPT, "user": "x" * (64 * 1024 + 1)}
    assert_refused(edit_form(server, long_field, [("image", png)]), 400, "VALIDATION_4001", None)
    many_fields = [(f"field{i}", (None, b"1", None)) for i in range(65)]
    response = httpx.post(
        f"{server.base_url}/images/edits",
        files=[("image", png), *many_fields],
        headers=AUTH,
        timeout=60,
    )
    assert_refused(response, 400, "VALIDATION_4001", None)


def test_multipart_is_refused_on_generations(server: Server) -> None:
    response = httpx.post(
        f"{server.base_url}/images/generations", files=[("image", ("a.png", b"x", "image/png"))], headers=AUTH
    )
    assert_refused(response, 415, "VALIDATION_4150", None)


def test_a_multipart_edit_run_as_a_job_gives_the_synchronous_image(server: Server) -> None:
    """The files are bytes in the request; a job stores the request as JSON (base64) and reads it back."""
    form = {"model": MODEL, "prompt": PROMPT, "seed": "7", "steps": "4"}
    files = [("image", ("a.png", encoded(picture()), "image/png")), ("mask", ("m.png", encoded(mask()), "image/png"))]
    synchronous = edit_form(server, form, files)
    assert synchronous.status_code == 200, synchronous.text
    accepted = httpx.post(
        f"{server.base_url}/images/edits",
        data=form,
        files=files,
        headers={**AUTH, "Prefer": "respond-async"},
        timeout=60,
    )
    assert accepted.status_code == 202, accepted.text
    link = f"{server.root}{accepted.headers['location']}"
    done = wait_until(
        lambda: (job := httpx.get(link, headers=AUTH).json())["status"] in ("succeeded", "failed") and job,
        120,
        "the edit's job ending",
        interval=0.1,
    )
    assert done["status"] == "succeeded", done
    assert done["result"]["data"] == synchronous.json()["data"]


def test_an_operator_can_refuse_moderation_low(server: Server, strict_server: Server) -> None:
    body = {"model": MODEL, "prompt": PROMPT, "size": "256x256", "moderation": "low"}
    assert post(server, body).status_code == 200
    assert_refused(post(strict_server, body), 400, "VALIDATION_4006", "moderation")


def test_an_edit_past_the_body_limit_is_413_before_it_is_parsed(guarded_server: Server) -> None:
    large = ("large.png", b"\0" * (1024 * 1024 + 1), "image/png")  # the guarded server's limit: 1 MiB
    assert_refused(edit_form(guarded_server, {"prompt": PROMPT}, [("image", large)]), 413, "VALIDATION_4130", None)
