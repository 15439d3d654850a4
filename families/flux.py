"""FLUX.1 [schnell|dev], declared: CLIP for the pooled prompt, T5 for its tokens, a transformer over
packed latents (export/flux.py exports it, frontend/pipelines/flux.py serves it)."""

from __future__ import annotations

from families.family import TOKENIZER, VAE_AXES, VAE_DECODER, VAE_ENCODER, Axis, Component, Family, Variant

CLIP = Component("text_encoder", "text_encoder", tokenizer="tokenizer")
T5 = Component("text_encoder_2", "text_encoder", tokenizer="tokenizer_2")
TRANSFORMER = Component("transformer", "denoiser")
CLIP_MAX_TOKENS = 77

IMG2IMG_PARAMETERS = frozenset(
    {"steps", "width", "height", "negative_prompt", "true_cfg_scale", "input_images", "mask_image", "strength"}
)

FLUX = Family(
    name="flux",
    checkpoint_class="FluxPipeline",
    components=(TOKENIZER, CLIP, T5, TRANSFORMER, VAE_ENCODER, VAE_DECODER),
    axes=(
        Axis("clip_tokens", "prompt", (CLIP,)),
        Axis("t5_tokens", "prompt", (T5,)),
        # The transformer attends over T5's tokens, the longer prompt.
        Axis("text_tokens", "prompt", (CLIP, T5)),
        Axis("image_tokens", "image_tokens"),
        *VAE_AXES,
    ),
    variants=(
        # T5's prompt length: schnell is distilled at 256 tokens, dev at 512 (Black Forest Labs'
        # reference settings); schnell is guidance-distilled and has no guidance input.
        Variant(
            "schnell",
            steps=4,
            guidance=0.0,
            prompt_lengths={CLIP.name: CLIP_MAX_TOKENS, T5.name: 256},
            parameters=IMG2IMG_PARAMETERS,
        ),
        Variant(
            "dev",
            steps=28,
            guidance=3.5,
            prompt_lengths={CLIP.name: CLIP_MAX_TOKENS, T5.name: 512},
            parameters=IMG2IMG_PARAMETERS | {"guidance"},
            embeds_guidance=True,
        ),
    ),
    sizes=("1024x1024", "1792x1024", "1024x1792", "1536x1024", "1024x1536", "768x768", "512x512", "256x256"),
    default_strength=0.6,  # FluxImg2ImgPipeline's default
    default_inpaint_strength=0.6,  # FluxInpaintPipeline's default
    exporter="export.flux",
    pipeline="frontend.pipelines.flux:FluxPipeline",
    latent_packing=2,  # FLUX packs 2x2 latent cells into one token
)
