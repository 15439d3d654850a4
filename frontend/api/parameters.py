"""From a validated request to a `GenerationJob`: the chosen model's defaults, bounds and effects.

Policy for a model-specific parameter the chosen model does not use: the request is refused
(`VALIDATION_4006`, naming the parameter and the parameters the model does take), never silently
ignored, because a multi-model client that sends `guidance` to a guidance-distilled model would
otherwise get an image that does not reflect what it asked for.
"""

from __future__ import annotations

import numpy as np

from frontend.api.errors import InvalidParameter, ParameterNotSupported
from frontend.api.protocol import MODEL_PARAMETERS, ImageRequest
from frontend.imaging import decode_input_image, image_to_array
from frontend.pipelines.job import GenerationJob, Limits
from frontend.pipelines.noise import image_seeds

HD_STEPS_FACTOR = 2
"""quality="hd" runs twice the model's default steps (a finer trajectory) unless `steps` is given."""
NATURAL_GUIDANCE_FACTOR = 0.7
"""style="natural" scales the model's default guidance down: less saturated, less contrasted images."""
DEFAULT_TRUE_CFG_SCALE = 4.0
"""FLUX's true classifier-free guidance scale when a negative prompt is given without one."""
DEFAULT_LORA_SCALE = 1.0
"""diffusers' adapter weight when `set_adapters` is given none."""


def resolve_job(request: ImageRequest, model: str, limits: Limits) -> GenerationJob:
    """Apply the model's defaults and bounds to a request (CPU-bound with input images: run off the loop)."""
    refuse_unused_parameters(request, model, limits)
    width, height, init_images = resolve_size_and_images(request, limits)
    steps = resolve_steps(request, limits)
    strength = request.strength if request.strength is not None else limits.default_strength
    return GenerationJob(
        prompt=request.prompt,
        width=width,
        height=height,
        steps=steps,
        seeds=image_seeds(request.seed, request.n),
        guidance=resolve_guidance(request, limits),
        negative_prompt=request.negative_prompt,
        true_cfg_scale=request.true_cfg_scale or (DEFAULT_TRUE_CFG_SCALE if request.negative_prompt else 1.0),
        init_images=init_images,
        strength=strength,
        adapters=resolve_adapters(request),
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


def resolve_steps(request: ImageRequest, limits: Limits) -> int:
    if request.steps is None:
        return min(limits.default_steps * (HD_STEPS_FACTOR if request.quality == "hd" else 1), limits.max_steps)
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


def resolve_size_and_images(request: ImageRequest, limits: Limits) -> tuple[int, int, np.ndarray | None]:
    """The output size and the input images resized to it.

    The size is `width`/`height` when given, else `size`, else (img2img) the first input image's size
    rounded down to the model's multiple, else the model's default size. With k input images and
    n outputs, k must be 1 (every image starts from it) or n (image i starts from input i).
    """
    images = [decode_input_image(data, "input_images") for data in request.input_images or ()]
    if images and len(images) not in (1, request.n):
        raise InvalidParameter(
            f"Give 1 input image, or one per output image (n={request.n}); got {len(images)}.", param="input_images"
        )
    if request.width is None and request.height is None and request.size is None and images:
        width, height = (_fit(side, limits) for side in images[0].size)
    else:
        width, height = resolve_size(request, limits)
    if not images:
        return width, height, None
    arrays = [image_to_array(image, width, height) for image in images]
    return width, height, np.stack(arrays * request.n if len(arrays) == 1 else arrays)


def resolve_size(request: ImageRequest, limits: Limits) -> tuple[int, int]:
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


def _fit(side: int, limits: Limits) -> int:
    return min(max(side - side % limits.side_multiple, limits.min_side), limits.max_side)
