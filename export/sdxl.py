"""SDXL: the components to export and the torch wrappers that give them Triton-friendly signatures.

The wrappers return what StableDiffusionXLPipeline.encode_prompt reads (clip_skip None: each CLIP
encoder's penultimate hidden states, and text_encoder_2's projected pooled output), and give the
UNet a per-sample `timestep` of shape (B, 1) so Triton can batch steps of different requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from export import loading
from export.components import BATCH, Component, TensorSpec
from export.loading import Source
from export.lora import DEFAULT_RANK, LowRankFactors, add_low_rank_branches, lora_inputs, lora_metadata
from export.vae import VaeDecoder, VaeEncoder, vae_components
from families.family import VAE_DECODER, VAE_ENCODER
from families.sdxl import CLIP, CLIP_2, CLIP_MAX_TOKENS, SDXL, UNET

TIME_IDS = 6
"""The micro-conditioning of `_get_add_time_ids`: original size, crop top-left, target size."""
UNET_MAX_BATCH = 32
"""Ten images with classifier-free guidance make a batch of 20; concurrent requests may add to it."""


class ClipPenultimate(torch.nn.Module):
    """text_encoder: the hidden states before the last layer, as encode_prompt's `hidden_states[-2]`."""

    def __init__(self, encoder: CLIPTextModel) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        penultimate: torch.Tensor = self.encoder(input_ids, output_hidden_states=True).hidden_states[-2]
        return penultimate


class ClipPenultimateAndPooled(torch.nn.Module):
    """text_encoder_2: the penultimate hidden states and the projected pooled output (`text_embeds`)."""

    def __init__(self, encoder: CLIPTextModelWithProjection) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.encoder(input_ids, output_hidden_states=True)
        return output.hidden_states[-2], output.text_embeds


class SdxlDenoiser(torch.nn.Module):
    """The UNet with a per-sample timestep (B, 1) and its added conditions as plain inputs; with
    `factors`, each sample's LoRA factors (export/lora.py)."""

    def __init__(self, unet: UNet2DConditionModel, factors: LowRankFactors | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.factors = factors

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        text_embeds: torch.Tensor,
        time_ids: torch.Tensor,
        lora_down: torch.Tensor | None = None,
        lora_up: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.factors is not None:
            self.factors.load(lora_down, lora_up)
        noise_pred: torch.Tensor = self.unet(
            sample,
            timestep.reshape(-1),
            encoder_hidden_states=encoder_hidden_states,
            # In FP32 whatever the weights: the UNet concatenates them with its FP32 time-id embeddings, a
            # type promotion torch makes and the ONNX exporter does not (FP16 graphs failed to load).
            added_cond_kwargs={"text_embeds": text_embeds.to(torch.float32), "time_ids": time_ids},
            return_dict=False,
        )[0]
        return noise_pred


def _denoiser(unet: UNet2DConditionModel, lora_rank: int) -> SdxlDenoiser:
    return SdxlDenoiser(unet, add_low_rank_branches(unet, lora_rank) if lora_rank else None)


SOURCES: dict[str, Source] = {
    CLIP.name: Source("text_encoder", CLIPTextModel, lambda model, _: ClipPenultimate(model)),
    CLIP_2.name: Source(
        "text_encoder_2", CLIPTextModelWithProjection, lambda model, _: ClipPenultimateAndPooled(model)
    ),
    UNET.name: Source("unet", UNet2DConditionModel, _denoiser),
    VAE_DECODER.name: Source("vae", AutoencoderKL, lambda model, _: VaeDecoder(model)),
    VAE_ENCODER.name: Source("vae", AutoencoderKL, lambda model, _: VaeEncoder(model)),
}
"""Component name -> its module in a diffusers SDXL folder; the UNet with LoRA branches of the rank
budget (none for 0)."""


def load_modules(checkpoint: Path, lora_rank: int = DEFAULT_RANK, weights: bool = True) -> dict[str, torch.nn.Module]:
    return loading.load_modules(SOURCES, checkpoint, lora_rank, weights)


def describe(modules: dict[str, torch.nn.Module]) -> tuple[tuple[Component, ...], dict[str, Any]]:
    """The components' tensor contracts and the pipeline metadata the frontend reads from Triton."""
    clip = loading.loaded(modules, CLIP.name, ClipPenultimate).encoder.config
    clip_2 = loading.loaded(modules, CLIP_2.name, ClipPenultimateAndPooled).encoder.config
    denoiser = loading.loaded(modules, UNET.name, SdxlDenoiser)
    unet = denoiser.unet.config
    vae = loading.loaded(modules, VAE_DECODER.name, VaeDecoder).vae.config
    (variant,) = SDXL.variants
    if unet.addition_embed_type != "text_time":
        raise ValueError(f"an SDXL UNet conditions on text_time, not {unet.addition_embed_type!r}")
    text_embeds = clip_2.projection_dim
    if text_embeds is None:
        raise ValueError("an SDXL text_encoder_2 projects its pooled output (projection_dim)")
    vae_scale_factor = 2 ** (len(vae.block_out_channels) - 1)
    latent = (BATCH, unet.in_channels, "latent_height", "latent_width")
    components = (
        Component(
            name=CLIP.name,
            subfolder="text_encoder",
            inputs=(TensorSpec("input_ids", "INT64", (BATCH, "clip_tokens")),),
            outputs=(TensorSpec("prompt_embeds", "FP32", (BATCH, "clip_tokens", clip.hidden_size)),),
            sample_sizes={BATCH: 2, "clip_tokens": CLIP_MAX_TOKENS},
        ),
        Component(
            name=CLIP_2.name,
            subfolder="text_encoder_2",
            inputs=(TensorSpec("input_ids", "INT64", (BATCH, "clip_tokens")),),
            outputs=(
                TensorSpec("prompt_embeds", "FP32", (BATCH, "clip_tokens", clip_2.hidden_size)),
                TensorSpec("text_embeds", "FP32", (BATCH, text_embeds)),
            ),
            sample_sizes={BATCH: 2, "clip_tokens": CLIP_MAX_TOKENS},
        ),
        Component(
            name=UNET.name,
            subfolder="unet",
            inputs=(
                TensorSpec("sample", "FP32", latent),
                TensorSpec("timestep", "FP32", (BATCH, 1)),
                TensorSpec("encoder_hidden_states", "FP32", (BATCH, "text_tokens", unet.cross_attention_dim)),
                TensorSpec("text_embeds", "FP32", (BATCH, text_embeds)),
                TensorSpec("time_ids", "FP32", (BATCH, TIME_IDS)),
                *(lora_inputs(denoiser.factors) if denoiser.factors is not None else ()),
            ),
            outputs=(TensorSpec("noise_pred", "FP32", latent),),
            sample_sizes={BATCH: 2, "latent_height": 16, "latent_width": 16, "text_tokens": 32},
            max_batch_size=UNET_MAX_BATCH,
        ),
        *vae_components(vae),
    )
    metadata = {
        "family": SDXL.name,
        "latent_channels": int(unet.in_channels),
        "vae_scale_factor": vae_scale_factor,
        "default_steps": variant.steps,
        "default_guidance": variant.guidance,
        "text_encoders": dict(variant.prompt_lengths),
        # The UNet's skip connections need latent sides divisible by 2 per down block. diffusers
        # handles other sizes by forwarding `upsample_size`, a branch the export fixes at trace time.
        "side_multiple": vae_scale_factor * 2 ** (len(unet.block_out_channels) - 1),
    }
    if denoiser.factors is not None:
        metadata["lora"] = lora_metadata(denoiser.factors, UNET.name)
    return components, metadata
