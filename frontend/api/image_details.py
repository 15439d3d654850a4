"""What a response says of how its images were made, as gpt-image responses do: `size`, `quality`,
`output_format`, `background`, and `usage` in tokens.

Tokens are counted as the models read them (README, Response): a text token is a position a text
encoder reads, padded as the tokenizer pads it (CLIP 77, T5 256 or 512: what an encoder's cost
depends on), for the prompt and the negative prompt when one is given; an image token is a latent
position, width / 8 x height / 8 (the VAE's scale factor; FLUX's transformer packs 2 x 2 of them into
one of its tokens). Input images count at the size they are encoded at, outputs at the output size.
"""

from __future__ import annotations

from frontend.api.parameters import quality_tier
from frontend.api.protocol import ImageDetails, ImageRequest, ImageUsage, InputTokensDetails
from frontend.pipelines.job import GenerationJob
from frontend.pipelines.pipeline import DiffusionPipeline


def describe(request: ImageRequest, pipeline: DiffusionPipeline, job: GenerationJob) -> ImageDetails:
    return ImageDetails.model_validate(
        {
            "size": f"{job.width}x{job.height}",
            "quality": quality_tier(request),
            "output_format": request.output_format,
            "background": "opaque",
            "usage": token_usage(request, pipeline, job),
        }
    )


def token_usage(request: ImageRequest, pipeline: DiffusionPipeline, job: GenerationJob) -> ImageUsage:
    prompts = 1 if job.negative_prompt is None else 2
    text_tokens = prompts * sum(pipeline.text_encoders.values())
    image_tokens = 0
    if job.init_images is not None:  # each input image once, at the size it is encoded at
        height, width = job.init_images.shape[-2:]
        image_tokens = len(request.input_images or ()) * latent_positions(pipeline, width, height)
    output_tokens = len(job.seeds) * latent_positions(pipeline, job.width, job.height)
    input_tokens = text_tokens + image_tokens
    return ImageUsage(
        input_tokens=input_tokens,
        input_tokens_details=InputTokensDetails(image_tokens=image_tokens, text_tokens=text_tokens),
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
    )


def latent_positions(pipeline: DiffusionPipeline, width: int, height: int) -> int:
    return (width // pipeline.vae_scale_factor) * (height // pipeline.vae_scale_factor)
