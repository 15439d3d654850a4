"""SDXL, declared: two CLIP encoders, a UNet with classifier-free guidance (export/sdxl.py exports it,
frontend/pipelines/sdxl.py serves it)."""

from __future__ import annotations

from families.family import TOKENIZER, VAE_AXES, VAE_DECODER, VAE_ENCODER, Axis, Component, Family, Variant

CLIP = Component("text_encoder", "text_encoder", tokenizer="tokenizer")
CLIP_2 = Component("text_encoder_2", "text_encoder", tokenizer="tokenizer_2")
UNET = Component("unet", "denoiser")
CLIP_MAX_TOKENS = 77  # both tokenizers' model_max_length, which encode_prompt pads to

SDXL = Family(
    name="sdxl",
    checkpoint_class="StableDiffusionXLPipeline",
    components=(TOKENIZER, CLIP, CLIP_2, UNET, VAE_ENCODER, VAE_DECODER),
    axes=(
        Axis("clip_tokens", "prompt", (CLIP, CLIP_2)),
        Axis("text_tokens", "prompt", (CLIP, CLIP_2)),
        *VAE_AXES,
    ),
    variants=(
        Variant(
            "base",
            steps=30,  # Stability AI's usual setting for SDXL base (the diffusers pipelines default to 50)
            guidance=5.0,
            prompt_lengths={CLIP.name: CLIP_MAX_TOKENS, CLIP_2.name: CLIP_MAX_TOKENS},
            parameters=frozenset(
                {"steps", "guidance", "negative_prompt", "width", "height", "input_images", "mask_image", "strength"}
            ),
        ),
    ),
    # SDXL's training buckets (about one megapixel) and smaller squares. OpenAI's larger presets
    # (1792x1024, 1536x1024) are left out: past its buckets SDXL repeats subjects across the frame.
    sizes=(
        "1024x1024",
        "1152x896",
        "896x1152",
        "1216x832",
        "832x1216",
        "1344x768",
        "768x1344",
        "1536x640",
        "640x1536",
        "768x768",
        "512x512",
        "256x256",
    ),
    default_strength=0.3,  # StableDiffusionXLImg2ImgPipeline's default
    # StableDiffusionXLInpaintPipeline's default: below 1, so the known image still sets the start.
    default_inpaint_strength=0.9999,
    exporter="export.sdxl",
    pipeline="frontend.pipelines.sdxl:SDXLPipeline",
)
