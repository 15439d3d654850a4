"""FLUX.1 Kontext [dev]: FLUX.1-dev's components, its transformer also attending to an input image.

diffusers' FluxKontextPipeline VAE-encodes the input image, packs its latents as FLUX packs the noise,
and concatenates them after the image tokens, with position ids of their own (first coordinate 1), so
the transformer's `hidden_states` is longer than the `noise_pred` the pipeline keeps. The exported
denoiser takes the input image's tokens and ids as inputs of their own (`context_latents`,
`context_ids`, on the `context_tokens` axis), concatenates them in the graph and returns the image
tokens' prediction alone: the output contract is FLUX's, and the input image's predictions, which
the pipeline discards, never cross Triton.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from diffusers import FluxTransformer2DModel

from export import flux, loading
from export.components import BATCH, Component, TensorSpec
from export.loading import Source
from export.lora import DEFAULT_RANK, add_low_rank_branches
from families.flux import TRANSFORMER
from families.kontext import CONTEXT_TOKENS, KONTEXT

CONTEXT_SAMPLE_TOKENS = 48
"""The export trace's input-image tokens: not the image tokens' 64, so the two axes stay apart."""


class KontextDenoiser(flux.FluxDenoiser):
    """FLUX's denoiser with the input image's packed latents and ids appended to the image tokens, as
    FluxKontextPipeline's `torch.cat([latents, image_latents], dim=1)`, and its prediction cut back to
    the image tokens (`noise_pred[:, : latents.size(1)]`)."""

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        pooled_projections: torch.Tensor,
        timestep: torch.Tensor,
        img_ids: torch.Tensor,
        context_latents: torch.Tensor,
        context_ids: torch.Tensor,
        guidance: torch.Tensor | None = None,
        lora_down: torch.Tensor | None = None,
        lora_up: torch.Tensor | None = None,
    ) -> torch.Tensor:
        noise_pred = super().forward(
            torch.cat([hidden_states, context_latents], dim=1),
            encoder_hidden_states,
            pooled_projections,
            timestep,
            torch.cat([img_ids, context_ids], dim=1),
            guidance,
            lora_down,
            lora_up,
        )
        return noise_pred[:, : hidden_states.shape[1]]


def _denoiser(transformer: FluxTransformer2DModel, lora_rank: int) -> KontextDenoiser:
    return KontextDenoiser(transformer, add_low_rank_branches(transformer, lora_rank) if lora_rank else None)


SOURCES: dict[str, Source] = {
    **flux.SOURCES,
    TRANSFORMER.name: Source("transformer", FluxTransformer2DModel, _denoiser),
}
"""FLUX's components, the transformer wrapped as `KontextDenoiser`."""


def load_modules(checkpoint: Path, lora_rank: int = DEFAULT_RANK, weights: bool = True) -> dict[str, torch.nn.Module]:
    return loading.load_modules(SOURCES, checkpoint, lora_rank, weights)


def describe(modules: dict[str, torch.nn.Module]) -> tuple[tuple[Component, ...], dict[str, Any]]:
    """FLUX.1-dev's contracts, the denoiser taking the input image's tokens besides; Kontext's defaults."""
    components, metadata = flux.describe(modules)
    if not metadata["guidance_embeds"]:
        raise ValueError("a FLUX.1 Kontext transformer embeds guidance, as FLUX.1-dev's")
    (variant,) = KONTEXT.variants
    return tuple(_with_context(c) if c.name == TRANSFORMER.name else c for c in components), {
        **metadata,
        "family": KONTEXT.name,
        "default_steps": variant.steps,
        "default_guidance": variant.guidance,
        "text_encoders": dict(variant.prompt_lengths),
    }


def _with_context(denoiser: Component) -> Component:
    """The denoiser's inputs with `context_latents` and `context_ids` after `img_ids`, in forward's order."""
    channels = next(t for t in denoiser.inputs if t.name == "hidden_states").dims[-1]
    context = (
        TensorSpec("context_latents", "FP32", (BATCH, CONTEXT_TOKENS, channels)),
        TensorSpec("context_ids", "FP32", (BATCH, CONTEXT_TOKENS, 3)),
    )
    at = [t.name for t in denoiser.inputs].index("img_ids") + 1
    return dataclasses.replace(
        denoiser,
        inputs=(*denoiser.inputs[:at], *context, *denoiser.inputs[at:]),
        sample_sizes={**denoiser.sample_sizes, CONTEXT_TOKENS: CONTEXT_SAMPLE_TOKENS},
    )
