"""From a validated request to a `GenerationJob`: the chosen model's defaults, bounds and effects.

Policy for a model-specific parameter the chosen model does not use: the request is refused
(`VALIDATION_4006`, naming the parameter and the parameters the model does take), never silently
ignored, because a multi-model client that sends `guidance` to a guidance-distilled model would
otherwise get an image that does not reflect what it asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from frontend.api.protocol import MODEL_PARAMETERS, ImageRequest
from frontend.errors import InvalidParameter, ParameterNotSupported
from frontend.imaging import base64_bytes, image_to_array, mask_to_array, open_input_image, open_mask
from frontend.pipelines.job import GenerationJob, Limits
from frontend.pipelines.noise import image_seeds
from frontend.pipelines.pipeline import DiffusionPipeline

QUALITY_TIERS = {"auto": "medium", "standard": "medium", "hd": "high"}
"""`quality` values that name another tier: dall-e-3's standard and hd keep their meaning."""
QUALITY_STEP_FACTORS = {"low": 0.5, "medium": 1.0, "high": 2.0, "xhigh": 3.0, "max": 4.0}
"""Each tier's steps as a multiple of the model's default (README, Request), within its maximum,
unless `steps` is given: more steps are a finer trajectory, fewer a cheaper, coarser one."""
NATURAL_GUIDANCE_FACTOR = 0.7
"""style="natural" scales the model's default guidance down: less saturated, less contrasted images."""
DEFAULT_TRUE_CFG_SCALE = 4.0
"""FLUX's true classifier-free guidance scale when a negative prompt is given without one."""
DEFAULT_LORA_SCALE = 1.0
"""diffusers' adapter weight when `set_adapters` is given none."""


def resolve_job(
    request: ImageRequest, pipeline: DiffusionPipeline, budget: RequestBudget, caller: str
) -> GenerationJob:
    """Apply the model's defaults and bounds to a request, and its budget before any input image's
    pixels are decoded (CPU-bound with input images: run off the loop). `caller`: whose prompt-cache
    rows the job may read."""
    limits = pipeline.limits
    refuse_unused_parameters(request, pipeline.name, limits)
    refuse_transparency(request)
    inputs = [open_input_image(data, "input_images") for data in request.input_images or ()]
    if limits.conditioning_sizes and len(inputs) != 1:
        raise InvalidParameter(
            f"The model `{pipeline.name}` edits one input image: give exactly one in `input_images`.",
            param="input_images",
        )
    if inputs and len(inputs) not in (1, request.n):
        raise InvalidParameter(
            f"Give 1 input image, or one per output image (n={request.n}); got {len(inputs)}.", param="input_images"
        )
    mask = open_request_mask(request, inputs)
    input_size = limits.input_size(*inputs[0].size) if inputs else None
    width, height = resolve_size(request, limits, input_size)
    job = GenerationJob(
        prompt=request.prompt,
        width=width,
        height=height,
        steps=resolve_steps(request, limits),
        seeds=image_seeds(request.seed, request.n),
        guidance=resolve_guidance(request, limits),
        negative_prompt=request.negative_prompt,
        true_cfg_scale=request.true_cfg_scale or (DEFAULT_TRUE_CFG_SCALE if request.negative_prompt else 1.0),
        strength=resolve_strength(request, limits),
        adapters=resolve_adapters(request),
        caller=caller,
    )
    conditioning = input_size[0] * input_size[1] if input_size is not None and limits.conditioning_sizes else 0
    input_pixels = sum(image.width * image.height for image in [*inputs, *([mask] if mask else [])])
    budget.check(job, pipeline.passes(job), input_pixels, conditioning)
    if not inputs:
        return job
    if input_size is not None and limits.conditioning_sizes:  # one image conditions every output, at its own size
        return replace(job, init_images=image_to_array(inputs[0], *input_size, "input_images")[np.newaxis])
    if pipeline.img2img_start(job.steps, job.strength) >= job.steps:
        raise InvalidParameter(
            f"`strength` {job.strength} keeps no step of {job.steps}: steps x strength must be at least 1.",
            param="strength",
        )
    # With k input images and n outputs, k is 1 (every image starts from it) or n (image i from input i).
    arrays = [image_to_array(image, width, height, "input_images") for image in inputs]
    job = replace(job, init_images=np.stack(arrays * request.n if len(arrays) == 1 else arrays))
    if mask is None:
        return job
    # One mask for every input image, so the same for every output: a view, not n copies.
    masks = np.broadcast_to(mask_to_array(mask, width, height, MASK_PARAM), (request.n, 1, height, width))
    return replace(job, masks=masks)


MASK_PARAM = "mask_image"


def open_request_mask(request: ImageRequest, inputs: list[Image.Image]) -> Image.Image | None:
    """The request's mask, opened from its header (`open_mask`): where to edit the input images, so a
    mask without one is refused."""
    if request.mask_image is None:
        return None
    if not inputs:
        raise InvalidParameter(
            f"`{MASK_PARAM}` marks where to edit an input image: give the image in `input_images`.", param=MASK_PARAM
        )
    return open_mask(base64_bytes(request.mask_image, MASK_PARAM), inputs[0].size, MASK_PARAM)


def resolve_strength(request: ImageRequest, limits: Limits) -> float:
    """`strength`, else the default of the diffusers pipeline the edit mirrors (img2img or inpaint)."""
    if request.strength is not None:
        return request.strength
    return limits.default_inpaint_strength if request.mask_image is not None else limits.default_strength


@dataclass(frozen=True)
class RequestBudget:
    """What one request may ask of a model, whatever mix of n, size, steps and guidance it picks:
    checked from the request and the input images' headers, before any work."""

    max_pixels: int
    """n x width x height (memory), and the input images' pixels together (their decoding)."""
    max_work: int
    """n x width x height x steps x passes: the denoiser's work, which sets how long a slot is held."""

    def check(self, job: GenerationJob, passes: int, input_pixels: int, conditioning_pixels: int) -> None:
        """`passes`: 2 where classifier-free guidance runs an unconditional pass beside each image.
        `conditioning_pixels`: the input image's, where its tokens go beside every image's at every step
        (Kontext: a step then costs 2.2 FLUX steps at 1024x1024 on an H200), so they count as work."""
        n = len(job.seeds)
        pixels = n * job.width * job.height
        if pixels > self.max_pixels:
            raise InvalidParameter(
                f"n x width x height is {n} x {job.width} x {job.height} = {pixels} pixels; "
                f"a request may ask for at most {self.max_pixels}.",
                param="n",
            )
        work = n * (job.width * job.height + conditioning_pixels) * job.steps * passes
        if work > self.max_work:
            conditioning = f" + {conditioning_pixels} conditioning" if conditioning_pixels else ""
            raise InvalidParameter(
                f"n x (width x height{' + the input image' if conditioning else ''}) x steps x passes is "
                f"{n} x ({job.width} x {job.height}{conditioning}) x {job.steps} x {passes} = {work} "
                f"(2 passes with guidance or a negative prompt); a request may ask for at most "
                f"{self.max_work}: fewer steps, fewer or smaller images.",
                param="steps",
            )
        if input_pixels > self.max_pixels:
            raise InvalidParameter(
                f"The input images (and mask) hold {input_pixels} pixels together; "
                f"a request may send at most {self.max_pixels}.",
                param="input_images",
            )


def output_quality(request: ImageRequest) -> int | None:
    if request.output_quality is not None and request.output_compression is not None:
        raise InvalidParameter("Give `output_quality` or `output_compression`, not both.", param="output_compression")
    if request.output_format == "png" and (request.output_quality or request.output_compression) is not None:
        param = "output_quality" if request.output_quality is not None else "output_compression"
        raise InvalidParameter(f"`{param}` applies to jpeg and webp; png is lossless.", param=param)
    if request.output_compression is not None:
        return max(1, 100 - request.output_compression)
    return request.output_quality


def refuse_unused_parameters(request: ImageRequest, model: str, limits: Limits) -> None:
    for param in MODEL_PARAMETERS:
        if getattr(request, param) is not None and param not in limits.parameters:
            raise ParameterNotSupported(
                f"The model `{model}` does not use `{param}`; it takes: {', '.join(sorted(limits.parameters))}.",
                param=param,
            )
    if request.style == "natural" and "guidance" not in limits.parameters:
        raise ParameterNotSupported(
            f"style='natural' lowers guidance, which the model `{model}` does not use.", param="style"
        )


def refuse_transparency(request: ImageRequest) -> None:
    if request.background == "transparent":
        raise InvalidParameter(
            "background='transparent' is not supported: the models make opaque RGB images. Supported: auto or opaque.",
            param="background",
        )


def check_moderation(request: ImageRequest, low_allowed: bool) -> None:
    """`moderation=low` changes no check here (README, Request); an operator who would rather say so
    refuses it (IMAGEGEN_MODERATION_LOW=off)."""
    if request.moderation == "low" and not low_allowed:
        raise ParameterNotSupported(
            "moderation='low' is turned off on this server: every prompt and image is checked as with auto.",
            param="moderation",
        )


def resolve_adapters(request: ImageRequest) -> tuple[tuple[str, float], ...]:
    """(name, scale) per LoRA adapter: `lora_scale` one number for all (default 1.0) or one per adapter."""
    if request.lora_weights is None:
        if request.lora_scale is not None:
            raise InvalidParameter("`lora_scale` needs `lora_weights`.", param="lora_scale")
        return ()
    names = [request.lora_weights] if isinstance(request.lora_weights, str) else request.lora_weights
    if len(set(names)) < len(names):
        raise InvalidParameter("`lora_weights` names an adapter twice.", param="lora_weights")
    scale = DEFAULT_LORA_SCALE if request.lora_scale is None else request.lora_scale
    scales = [scale] * len(names) if isinstance(scale, float) else scale
    if len(scales) != len(names):
        raise InvalidParameter(
            f"`lora_scale` gives {len(scales)} scales for {len(names)} adapters: give one, or one per adapter.",
            param="lora_scale",
        )
    return tuple(zip(names, scales, strict=True))


def quality_tier(request: ImageRequest) -> str:
    """The gpt-image tier `quality` names (the response echoes it)."""
    return QUALITY_TIERS.get(request.quality, request.quality)


def resolve_steps(request: ImageRequest, limits: Limits) -> int:
    if request.steps is None:
        steps = round(limits.default_steps * QUALITY_STEP_FACTORS[quality_tier(request)])
        return min(max(steps, 1), limits.max_steps)
    if request.steps > limits.max_steps:
        raise InvalidParameter(f"`steps` must be between 1 and {limits.max_steps} for this model.", param="steps")
    return request.steps


def resolve_guidance(request: ImageRequest, limits: Limits) -> float:
    guidance = request.guidance
    if guidance is None:
        guidance = limits.default_guidance * (NATURAL_GUIDANCE_FACTOR if request.style == "natural" else 1.0)
    if guidance > limits.max_guidance:
        raise InvalidParameter(
            f"`guidance` must be between 0 and {limits.max_guidance} for this model.", param="guidance"
        )
    return guidance


def resolve_size(request: ImageRequest, limits: Limits, input_size: tuple[int, int] | None) -> tuple[int, int]:
    """`width`/`height` when given, else `size`, else (or with `size=auto`) the size the first input
    image sets (`Limits.input_size`), else the model's default size."""
    if request.width is None and request.height is None and request.size in (None, "auto") and input_size is not None:
        return input_size
    if (request.width is None) != (request.height is None):
        raise InvalidParameter("Give both `width` and `height`, or neither.", param="width")
    if request.width is not None and request.height is not None:
        if request.size is not None:
            raise InvalidParameter("Give either `size` or `width`/`height`, not both.", param="size")
        for param, side in (("width", request.width), ("height", request.height)):
            if not limits.min_side <= side <= limits.max_side or side % limits.side_multiple:
                raise InvalidParameter(
                    f"`{param}` must be a multiple of {limits.side_multiple} between "
                    f"{limits.min_side} and {limits.max_side}; got {side}.",
                    param=param,
                )
        return request.width, request.height
    size = request.size or limits.default_size
    if size == "auto":
        size = limits.default_size
    if size not in limits.sizes:
        raise InvalidParameter(
            f"`size` must be one of {', '.join(limits.sizes)} or auto for this model; got {size!r}.", param="size"
        )
    width, height = (int(side) for side in size.split("x"))
    return width, height
