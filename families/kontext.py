"""FLUX.1 Kontext [dev], declared: FLUX.1-dev's components, its transformer also attending to one input
image's tokens on an axis of their own (export/kontext.py exports it, frontend/pipelines/kontext.py
serves it, as diffusers' FluxKontextPipeline)."""

from __future__ import annotations

from dataclasses import replace

from families.family import Axis, Variant
from families.flux import CLIP, CLIP_MAX_TOKENS, FLUX, T5

CONTEXT_TOKENS = "context_tokens"
"""The input image's packed tokens, which the denoiser appends to the image tokens (export/kontext.py)."""
PARAMETERS = frozenset({"steps", "guidance", "width", "height", "negative_prompt", "true_cfg_scale", "input_images"})
"""FLUX.1-dev's, but `strength`: the input image conditions every output; it is not an img2img start."""

KONTEXT = replace(
    FLUX,
    name="flux-kontext",
    checkpoint_class="FluxKontextPipeline",
    # The input image's packed tokens: a conditioning size's, within the sides an image may have.
    axes=(*FLUX.axes, Axis(CONTEXT_TOKENS, "image_tokens")),
    variants=(
        Variant(
            "dev",
            steps=28,
            guidance=2.5,  # Black Forest Labs' reference setting for Kontext [dev] (diffusers defaults to 3.5)
            prompt_lengths={CLIP.name: CLIP_MAX_TOKENS, T5.name: 512},
            parameters=PARAMETERS,
            embeds_guidance=True,
        ),
    ),
    # diffusers' PREFERRED_KONTEXT_RESOLUTIONS (width x height), the resolutions Kontext was trained at.
    conditioning_sizes=(
        "672x1568",
        "688x1504",
        "720x1456",
        "752x1392",
        "800x1328",
        "832x1248",
        "880x1184",
        "944x1104",
        "1024x1024",
        "1104x944",
        "1184x880",
        "1248x832",
        "1328x800",
        "1392x752",
        "1456x720",
        "1504x688",
        "1568x672",
    ),
    exporter="export.kontext",
    pipeline="frontend.pipelines.kontext:KontextPipeline",
)
