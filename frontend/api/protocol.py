"""Request and response models of `POST /v1/images/generations`, mirroring OpenAI's Images API."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from frontend.api.body_limits import parse_json
from frontend.errors import (
    APIError,
    InvalidParameter,
    MalformedBody,
    PromptMissing,
    UnsupportedResponseFormat,
)
from frontend.safety import MAX_PROMPT_CHARACTERS

MAX_IMAGES = 10
MAX_SEED = 2**32 - 1
MAX_ADAPTERS = 4
"""LoRA adapters per request; their ranks must also fit the model's rank budget."""
MIN_LORA_SCALE, MAX_LORA_SCALE = -4.0, 4.0

OutputFormat = Literal["png", "jpeg", "webp"]

CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
"""C0 controls but tab and newlines, DEL, and lone surrogates (which JSON can escape but UTF-8 cannot
encode): no tokenizer reads them as text, so a prompt holding one is refused, not silently mangled."""


def _printable(text: str) -> str:
    if found := CONTROL_CHARACTERS.search(text):
        raise ValueError(f"control character U+{ord(found.group()):04X} at position {found.start()}")
    return text


Text = Annotated[str, AfterValidator(_printable)]
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
    quality: Literal["standard", "hd"] = "standard"
    style: Literal["vivid", "natural"] = "vivid"
    response_format: Literal["b64_json"] = "b64_json"
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    user: str | None = Field(default=None, max_length=256)
    output_format: OutputFormat = "png"
    output_quality: int | None = Field(default=None, ge=1, le=100)
    output_compression: int | None = Field(default=None, ge=0, le=100)
    """OpenAI's name for the inverse of output_quality: quality = 100 - compression."""
    # Model-specific parameters (MODEL_PARAMETERS): a model that does not use one refuses it.
    steps: int | None = Field(default=None, ge=1)
    guidance: float | None = Field(default=None, ge=0)
    negative_prompt: Text | None = Field(default=None, max_length=MAX_PROMPT_CHARACTERS)
    true_cfg_scale: float | None = Field(default=None, ge=1)
    input_images: list[str] | None = Field(default=None, min_length=1, max_length=MAX_IMAGES)
    strength: float | None = Field(default=None, gt=0, le=1)
    lora_weights: AdapterName | AdapterNames | None = None
    """Registered LoRA adapters (`imagegen lora list`), one name or up to MAX_ADAPTERS."""
    lora_scale: LoraScale | LoraScales | None = None
    """One scale for every adapter, or one per adapter; default 1.0."""


MODEL_PARAMETERS = (
    "steps",
    "guidance",
    "negative_prompt",
    "true_cfg_scale",
    "width",
    "height",
    "input_images",
    "strength",
    "lora_weights",
    "lora_scale",
)
"""Top-level parameters only some models use; GET /v1/models lists which each model takes."""


class ImageData(BaseModel):
    b64_json: str
    seed: int
    revised_prompt: str | None = None


class ImageResponse(BaseModel):
    created: int
    data: list[ImageData]
    energy_cost: float
    credits_cost: float


def parse_image_request(body: bytes) -> ImageRequest:
    """Decode and validate a body, raising the API error a client should see for its first problem."""
    document = parse_json(body)
    if not isinstance(document, dict):
        raise MalformedBody("The request body must be a JSON object.")
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
    if first["type"] == "extra_forbidden":
        return InvalidParameter(f"Unknown parameter: `{param}`.", param=param)
    return InvalidParameter(f"Invalid `{param}`: {first['msg']}.", param=param)
