"""`POST /v1/images/edits`: OpenAI's multipart form (or JSON with base64 images) read into the same
`ImageRequest` as generations, then answered by the same frame (`images.answer`: auth, rate limits,
ledger, admission, safety). The files become the request's input images, as `input_images` do:
img2img from the first (or image i for output i), Kontext's conditioning, and with a `mask`
inpainting (api/parameters.py).

The form is bounded before anything is decoded: the body by `max_body_bytes` (body_limits.py), then
the number of files and fields and each field's size while it is parsed, each file's size once it is
read, and each image's format and pixel count from its header alone (imaging.py).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response

from frontend.api.body_limits import FORM, parse_json
from frontend.api.images import answer
from frontend.api.protocol import (
    MAX_INPUT_IMAGES,
    UNSUPPORTED_OPENAI_PARAMETERS,
    ImageRequest,
    validate_image_request,
)
from frontend.errors import APIError, InvalidParameter, MalformedBody, ParameterNotSupported
from frontend.imaging import open_input_image

IMAGE, MASK = "image", "mask"
MAX_FORM_FIELDS = 64
"""Text fields of one form: the request's parameters, lists given one value per field included."""
MAX_FIELD_BYTES = 64 * 1024
"""One text field: a prompt of 10,000 characters is at most 40 KB of UTF-8."""
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_MASK_BYTES = 4 * 1024 * 1024
"""OpenAI's bounds on one image file and on the mask; the body's own bound usually comes first."""
LIST_FIELDS = frozenset({"lora_weights", "lora_scale"})
"""Fields that take a list: repeated, or named with `[]` (`lora_weights[]`), as clients send arrays."""


def _integer(text: str) -> int:
    return int(text.strip())


def _number(text: str) -> float:
    value = float(text.strip())
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _boolean(text: str) -> bool:
    return {"true": True, "false": False}[text.strip().lower()]


FIELD_TYPES: dict[str, tuple[Callable[[str], Any], str]] = {
    **{
        name: (_integer, "an integer")
        for name in ("n", "seed", "steps", "width", "height", "output_compression", "output_quality", "partial_images")
    },
    **{name: (_number, "a number") for name in ("guidance", "strength", "true_cfg_scale", "lora_scale")},
    "stream": (_boolean, "true or false"),
}
"""A form's fields are text: those the request takes as numbers or booleans, converted by name."""


async def create_edits(request: Request) -> Response:
    return await answer(request, read_edit_request, "image_edit")


async def read_edit_request(request: Request) -> ImageRequest:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    document = await read_form(request) if media_type == FORM else json_edit(parse_json(await request.body()))
    if not document.get("input_images"):
        raise InvalidParameter("An edit needs an image: give one or more files as `image` (or `image[]`).", param=IMAGE)
    return validate_image_request(document)


def json_edit(document: Any) -> dict[str, Any]:
    """A JSON edit: the spec's `input_images` and `mask_image`, or OpenAI's names for them (`image`,
    one or a list, or `images` of base64 strings or `{"image_url": ...}` objects; `mask`)."""
    if not isinstance(document, dict):
        raise MalformedBody("The request body must be a JSON object.")
    given = [name for name in ("input_images", IMAGE, "images") if name in document]
    if len(given) > 1:
        raise InvalidParameter(f"Give the images once: in one of {', '.join(given)}.", param=given[1])
    if IMAGE in document or "images" in document:
        images = document.pop(given[0])
        document["input_images"] = [_image_url(image) for image in (images if isinstance(images, list) else [images])]
    if MASK in document:
        if "mask_image" in document:
            raise InvalidParameter("Give the mask once: in `mask` or in `mask_image`.", param=MASK)
        document["mask_image"] = _image_url(document.pop(MASK))
    return document


def _image_url(image: Any) -> Any:
    """OpenAI's image reference `{"image_url": ...}` as the URL it holds (a data: URL here)."""
    return image.get("image_url") if isinstance(image, dict) else image


async def read_form(request: Request) -> dict[str, Any]:
    parser = MultiPartParser(
        request.headers,
        request.stream(),
        max_files=MAX_INPUT_IMAGES + 1,  # the images and the mask
        max_fields=MAX_FORM_FIELDS,
        max_part_size=MAX_FIELD_BYTES,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise MalformedBody(f"The multipart form was refused: {exc.message}") from None
    try:
        document: dict[str, Any] = {}
        images: list[bytes] = []
        for name, value in form.multi_items():
            field = name.partition("[")[0]
            if isinstance(value, UploadFile):
                if field == IMAGE:
                    images.append(await _read_file(value, IMAGE, MAX_IMAGE_BYTES))
                elif field == MASK and MASK not in document:
                    document[MASK] = await _read_file(value, MASK, MAX_MASK_BYTES)
                else:
                    raise _unexpected(field, "takes no file (`image` and `mask` do)")
            elif field in (IMAGE, MASK):
                raise InvalidParameter(f"`{field}` is a file: send it as a file part of the form.", param=field)
            else:
                _add_field(document, name, field, value)
    finally:
        await form.close()
    if len(images) > MAX_INPUT_IMAGES:
        raise InvalidParameter(f"An edit takes at most {MAX_INPUT_IMAGES} images; got {len(images)}.", param=IMAGE)
    # Each image's format and pixel count from its header, before anything else reads it.
    await asyncio.to_thread(lambda: [open_input_image(image, IMAGE) for image in images])
    if images:
        document["input_images"] = images
    if MASK in document:
        document["mask_image"] = document.pop(MASK)
    return document


async def _read_file(upload: UploadFile, field: str, max_bytes: int) -> bytes:
    if upload.size is not None and upload.size > max_bytes:
        raise InvalidParameter(
            f"`{field}` ({upload.filename}) is {upload.size} bytes; a file may have at most {max_bytes}.", param=field
        )
    return await upload.read()


def _add_field(document: dict[str, Any], name: str, field: str, text: str) -> None:
    """One text field, converted to the type the request takes it as; a list field collects its values."""
    convert, kind = FIELD_TYPES.get(field, (str, "text"))
    try:
        value = convert(text)
    except (ValueError, KeyError):
        raise InvalidParameter(f"`{field}` must be {kind}; got {text[:40]!r}.", param=field) from None
    if field in LIST_FIELDS and (name.endswith("[]") or field in document):
        found = document.setdefault(field, [])
        document[field] = [*(found if isinstance(found, list) else [found]), value]
    elif field in document:
        raise InvalidParameter(f"`{field}` is given more than once.", param=field)
    elif field != name and field not in LIST_FIELDS:
        raise _unexpected(field, f"takes one value, not `{name}`")
    else:
        document[field] = value


def _unexpected(field: str, why: str) -> APIError:
    if field in UNSUPPORTED_OPENAI_PARAMETERS:
        return ParameterNotSupported(
            f"`{field}` is not supported by this server: {UNSUPPORTED_OPENAI_PARAMETERS[field]}.", param=field
        )
    return InvalidParameter(f"`{field}` {why}.", param=field)
