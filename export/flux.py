"""FLUX.1 [schnell|dev]: the components to export and the torch wrappers that give them Triton-friendly signatures.

The wrappers fix what Triton's batching needs: every input carries the batch axis (the per-sample
`timestep`, the image position ids repeated per sample).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from transformers import CLIPTextModel, T5EncoderModel

from export import loading
from export.components import BATCH, Component, TensorSpec
from export.loading import Source
from export.lora import DEFAULT_RANK, LowRankFactors, add_low_rank_branches, lora_inputs, lora_metadata
from export.vae import VaeDecoder, VaeEncoder, vae_components
from families.family import VAE_DECODER, VAE_ENCODER
from families.flux import CLIP, FLUX, T5, TRANSFORMER

DENOISER_MAX_BATCH = 32
"""Ten images with true CFG make a batch of 20; concurrent requests may add to it."""


class ClipPooled(torch.nn.Module):
    def __init__(self, encoder: CLIPTextModel) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pooled: torch.Tensor = self.encoder(input_ids, output_hidden_states=False).pooler_output
        return pooled


class T5Hidden(torch.nn.Module):
    def __init__(self, encoder: T5EncoderModel) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = self.encoder(input_ids, output_hidden_states=False)[0]
        return hidden


class FluxDenoiser(torch.nn.Module):
    """Per-sample timestep (and guidance) of shape (B, 1); img_ids batched but identical per sample;
    with `factors`, each sample's LoRA factors (export/lora.py)."""

    def __init__(self, transformer: FluxTransformer2DModel, factors: LowRankFactors | None = None) -> None:
        super().__init__()
        self.transformer = transformer
        self.factors = factors

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        pooled_projections: torch.Tensor,
        timestep: torch.Tensor,
        img_ids: torch.Tensor,
        guidance: torch.Tensor | None = None,
        lora_down: torch.Tensor | None = None,
        lora_up: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.factors is not None:
            self.factors.load(lora_down, lora_up)
        # FluxPipeline passes txt_ids = zeros(text_tokens, 3) and img_ids without a batch axis.
        txt_ids = torch.zeros(encoder_hidden_states.shape[1], 3, dtype=img_ids.dtype)
        noise_pred: torch.Tensor = self.transformer(
            hidden_states=hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            pooled_projections=pooled_projections,
            timestep=timestep.reshape(-1),
            img_ids=img_ids[0],
            txt_ids=txt_ids,
            guidance=None if guidance is None else guidance.reshape(-1),
            return_dict=False,
        )[0]
        return noise_pred


def _denoiser(transformer: FluxTransformer2DModel, lora_rank: int) -> FluxDenoiser:
    return FluxDenoiser(transformer, add_low_rank_branches(transformer, lora_rank) if lora_rank else None)


SOURCES: dict[str, Source] = {
    CLIP.name: Source("text_encoder", CLIPTextModel, lambda model, _: ClipPooled(model)),
    T5.name: Source("text_encoder_2", T5EncoderModel, lambda model, _: T5Hidden(model)),
    TRANSFORMER.name: Source("transformer", FluxTransformer2DModel, _denoiser),
    VAE_DECODER.name: Source("vae", AutoencoderKL, lambda model, _: VaeDecoder(model)),
    VAE_ENCODER.name: Source("vae", AutoencoderKL, lambda model, _: VaeEncoder(model)),
}
"""Component name -> its module in a diffusers FLUX folder; the transformer with LoRA branches of the
rank budget (none for 0)."""


def load_modules(checkpoint: Path, lora_rank: int = DEFAULT_RANK, weights: bool = True) -> dict[str, torch.nn.Module]:
    return loading.load_modules(SOURCES, checkpoint, lora_rank, weights)


def describe(modules: dict[str, torch.nn.Module]) -> tuple[tuple[Component, ...], dict[str, Any]]:
    """The components' tensor contracts and the pipeline metadata the frontend reads from Triton."""
    clip = loading.loaded(modules, CLIP.name, ClipPooled).encoder.config
    t5 = loading.loaded(modules, T5.name, T5Hidden).encoder.config
    denoiser = loading.loaded(modules, TRANSFORMER.name, FluxDenoiser)
    transformer = denoiser.transformer.config
    vae = loading.loaded(modules, VAE_DECODER.name, VaeDecoder).vae.config
    guidance = bool(transformer.guidance_embeds)
    variant = FLUX.variant(guidance)
    channels = int(transformer.in_channels)
    denoiser_inputs = [
        TensorSpec("hidden_states", "FP32", (BATCH, "image_tokens", channels)),
        TensorSpec("encoder_hidden_states", "FP32", (BATCH, "text_tokens", transformer.joint_attention_dim)),
        TensorSpec("pooled_projections", "FP32", (BATCH, transformer.pooled_projection_dim)),
        TensorSpec("timestep", "FP32", (BATCH, 1)),
        TensorSpec("img_ids", "FP32", (BATCH, "image_tokens", 3)),
    ]
    if guidance:
        denoiser_inputs.append(TensorSpec("guidance", "FP32", (BATCH, 1)))
    if denoiser.factors is not None:
        denoiser_inputs.extend(lora_inputs(denoiser.factors))
    components = (
        Component(
            name=CLIP.name,
            subfolder="text_encoder",
            inputs=(TensorSpec("input_ids", "INT64", (BATCH, "clip_tokens")),),
            outputs=(TensorSpec("pooled_embeds", "FP32", (BATCH, clip.hidden_size)),),
            sample_sizes={BATCH: 2, "clip_tokens": variant.prompt_lengths[CLIP.name]},
        ),
        Component(
            name=T5.name,
            subfolder="text_encoder_2",
            inputs=(TensorSpec("input_ids", "INT64", (BATCH, "t5_tokens")),),
            outputs=(TensorSpec("prompt_embeds", "FP32", (BATCH, "t5_tokens", t5.d_model)),),
            sample_sizes={BATCH: 2, "t5_tokens": 32},
            overflows_fp16=True,  # T5 v1.1's feed-forward activations (why transformers keeps `wo` in FP32)
        ),
        Component(
            name=TRANSFORMER.name,
            subfolder="transformer",
            inputs=tuple(denoiser_inputs),
            outputs=(TensorSpec("noise_pred", "FP32", (BATCH, "image_tokens", channels)),),
            sample_sizes={BATCH: 2, "image_tokens": 64, "text_tokens": 32},
            max_batch_size=DENOISER_MAX_BATCH,
            overflows_fp16=True,  # its residual stream: diffusers clips the single blocks' FP16 output
        ),
        *vae_components(vae),
    )
    metadata = {
        "family": FLUX.name,
        "latent_channels": int(vae.latent_channels),
        "vae_scale_factor": 2 ** (len(vae.block_out_channels) - 1),
        "guidance_embeds": guidance,
        "default_steps": variant.steps,
        "default_guidance": variant.guidance,
        "text_encoders": dict(variant.prompt_lengths),
    }
    if denoiser.factors is not None:
        metadata["lora"] = lora_metadata(denoiser.factors, TRANSFORMER.name)
    return components, metadata
