"""Request and response models of `POST /v1/images/generations` and `/v1/images/edits`, mirroring
OpenAI's Images API (its gpt-image parameters and response fields included)."""

from __future__ import annotations

import base64
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from frontend.api.body_limits import parse_json
from frontend.errors import (
    APIError,
    InvalidParameter,
    MalformedBody,
    ParameterNotSupported,
    PromptMissing,
    UnsupportedResponseFormat,
)
from frontend.safety import MAX_PROMPT_CHARACTERS

MAX_IMAGES = 10
MAX_INPUT_IMAGES = 16
"""OpenAI's bound on an edit's images; a request takes 1, or one per output image (api/parameters.py)."""
MAX_SEED = 2**32 - 1
MAX_ADAPTERS = 4
"""LoRA adapters per request; their ranks must also fit the model's rank budget."""
MIN_LORA_SCALE, MAX_LORA_SCALE = -4.0, 4.0
MAX_PARTIAL_IMAGES = 3
"""OpenAI's bound on a stream's previews per image."""

OutputFormat = Literal["png", "jpeg", "webp"]
Quality = Literal["auto", "low", "medium", "high", "xhigh", "max", "standard", "hd"]
"""OpenAI's tiers (gpt-image's, and dall-e-3's standard and hd): step counts (api/parameters.py)."""
UNSUPPORTED_OPENAI_PARAMETERS = {
    "complexity": "it plans images with a language model, which this server's models have none of",
    "frame_count": "it asks for GIF frames; this server writes png, jpeg or webp",
    "frame_duration_ms": "it asks for GIF frames; this server writes png, jpeg or webp",
    "markup": "it overlays a guide for a language model, which this server's models have none of",
    "svg": "it asks for SVG authoring; this server writes png, jpeg or webp",
}
"""Parameters of the openai SDK (3.x) with no meaning here, and why: refused, never ignored."""

CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
"""C0 controls but tab and newlines, DEL, and lone surrogates (which JSON can escape but UTF-8 cannot
encode): no tokenizer reads them as text, so a prompt holding one is refused, not silently mangled."""


def _printable(text: str) -> str:
    if found := CONTROL_CHARACTERS.search(text):
        raise ValueError(f"control character U+{ord(found.group()):04X} at position {found.start()}")
    return text


Text = Annotated[str, AfterValidator(_printable)]


def _image_data(value: object) -> str | bytes:
    if isinstance(value, str | bytes):
        return value
    raise ValueError("an image is a base64 string or a data: URL holding one")


def _as_base64(value: str | bytes) -> str:
    return base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value


InputImage = Annotated[
    str | bytes,
    PlainValidator(_image_data),
    PlainSerializer(_as_base64, when_used="json"),
    WithJsonSchema({"type": "string", "description": "A base64 image, or a data: URL holding one"}),
]
"""An image in a request: base64 text from JSON, or a multipart file's bytes (api/edits.py), which are
never re-encoded; written as base64 again when a request is stored as JSON (a job's)."""
AdapterName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
LoraScale = Annotated[float, Field(ge=MIN_LORA_SCALE, le=MAX_LORA_SCALE)]
AdapterNames = Annotated[list[AdapterName], Field(min_length=1, max_length=MAX_ADAPTERS)]
LoraScales = Annotated[list[LoraScale], Field(min_length=1, max_length=MAX_ADAPTERS)]


class ImageRequest(BaseModel):
    """The request body; parameters a model does not know are rejected, never silently dropped."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: Text = Field(min_length=1, max_length=MAX_PROMPT_CHARACTERS)
    model: str | None = None
    n: int = Field(default=1, ge=1, le=MAX_IMAGES)
    size: str | None = None
    width: int | None = Field(default=None, ge=1)
    height: int | None = Field(default=None, ge=1)
    quality: Quality = "auto"
    background: Literal["auto", "opaque", "transparent"] = "auto"
    """Every image is opaque RGB: `transparent` is refused (api/parameters.py)."""
    moderation: Literal["auto", "low"] = "auto"
    """`low` weakens no check (README, Request); the operator may refuse it (IMAGEGEN_MODERATION_LOW)."""
    input_fidelity: Literal["high", "low"] | None = None
    """Accepted for OpenAI's clients; no effect: an edit keeps of its image what `strength` says."""
    style: Literal["vivid", "natural"] = "vivid"
    response_format: Literal["b64_json"] = "b64_json"
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    """OpenAI's newer name for `user`: the end user's id, which wins when both are given."""
    output_format: OutputFormat = "png"
    output_quality: int | None = Field(default=None, ge=1, le=100)
    output_compression: int | None = Field(default=None, ge=0, le=100)
    """OpenAI's name for the inverse of output_quality: quality = 100 - compression."""
    stream: bool = False
    """Server-Sent Events instead of one JSON answer (api/streaming.py)."""
    partial_images: int = Field(default=0, ge=0, le=MAX_PARTIAL_IMAGES)
    """Previews of each image a stream sends before it, spread over the steps."""
    webhook_url: str | None = Field(default=None, max_length=2048)
    """A job's only (api/jobs.py): where its end is POSTed, signed (frontend/webhooks.py)."""
    # Model-specific parameters (MODEL_PARAMETERS): a model that does not use one refuses it.
    steps: int | None = Field(default=None, ge=1)
    guidance: float | None = Field(default=None, ge=0)
    negative_prompt: Text | None = Field(default=None, max_length=MAX_PROMPT_CHARACTERS)
    true_cfg_scale: float | None = Field(default=None, ge=1)
    input_images: list[InputImage] | None = Field(default=None, min_length=1, max_length=MAX_INPUT_IMAGES)
    mask_image: InputImage | None = None
    """A base64 PNG the first input image's size whose fully transparent pixels mark where to edit."""
    strength: float | None = Field(default=None, gt=0, le=1)
    lora_weights: AdapterName | AdapterNames | None = None
    """Registered LoRA adapters (`imagegen lora list`), one name or up to MAX_ADAPTERS."""
    lora_scale: LoraScale | LoraScales | None = None
    """One scale for every adapter, or one per adapter; default 1.0."""

    @field_validator("partial_images")
    @classmethod
    def _streamed(cls, partial_images: int, info: ValidationInfo) -> int:
        if partial_images and not info.data.get("stream"):
            raise ValueError("partial images are sent only in a stream (`stream`: true)")
        return partial_images


MODEL_PARAMETERS = (
    "steps",
    "guidance",
    "negative_prompt",
    "true_cfg_scale",
    "width",
    "height",
    "input_images",
    "mask_image",
    "strength",
    "lora_weights",
    "lora_scale",
)
"""Top-level parameters only some models use; GET /v1/models lists which each model takes."""


class ImageData(BaseModel):
    b64_json: str
    seed: int
    revised_prompt: str | None = None


class InputTokensDetails(BaseModel):
    image_tokens: int
    text_tokens: int


class ImageUsage(BaseModel):
    """OpenAI's token usage, counted in latent positions and text encoder positions (README, Response)."""

    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    total_tokens: int


class ImageDetails(BaseModel):
    """What gpt-image responses echo of how the images were made, beside the images."""

    size: str
    quality: Literal["low", "medium", "high", "xhigh", "max"]
    output_format: OutputFormat
    background: Literal["opaque"]
    usage: ImageUsage


class ImageResponse(ImageDetails):
    created: int
    data: list[ImageData]
    energy_cost: float
    credits_cost: float


def parse_image_request(body: bytes) -> ImageRequest:
    """Decode and validate a body, raising the API error a client should see for its first problem."""
    document = parse_json(body)
    if not isinstance(document, dict):
        raise MalformedBody("The request body must be a JSON object.")
    return validate_image_request(document)


def validate_image_request(document: dict[str, Any]) -> ImageRequest:
    """A JSON body's object, or the fields of an edit's form (api/edits.py), as a request."""
    try:
        return ImageRequest.model_validate(document)
    except ValidationError as exc:
        raise _as_api_error(exc, document) from None


def _as_api_error(exc: ValidationError, document: dict[str, Any]) -> APIError:
    first = exc.errors()[0]
    # A union's errors name the member tried ("constrained-str"): not part of the parameter's path.
    path = [part for part in first["loc"] if isinstance(part, int) or part.isidentifier()]
    param = ".".join(str(part) for part in path) or None
    if param == "prompt" and (first["type"] == "missing" or document.get("prompt") in ("", None)):
        return PromptMissing("`prompt` is required and must be a non-empty string.", param="prompt")
    if param == "response_format":
        return UnsupportedResponseFormat(
            "Only response_format='b64_json' is supported: images are returned as base64 and never stored, "
            "so there is no URL to return.",
            param=param,
        )
    if first["type"] == "extra_forbidden" and param in UNSUPPORTED_OPENAI_PARAMETERS:
        return ParameterNotSupported(
            f"`{param}` is not supported by this server: {UNSUPPORTED_OPENAI_PARAMETERS[param]}.", param=param
        )
    if first["type"] == "extra_forbidden":
        return InvalidParameter(f"Unknown parameter: `{param}`.", param=param)
    return InvalidParameter(f"Invalid `{param}`: {first['msg']}.", param=param)
