"""`imagegen tiny --preset real-width`: FLUX.1 and SDXL at the published widths, depth cut to fit a CPU.

Every width, head size, vocabulary and RoPE axis is the published checkpoints' (`config.json` values,
cited per block below); only the depth is cut: one FLUX double block and two single blocks (of 19 and
38), one T5 layer (of 24), two CLIP layers (of 12 and 32), SDXL's UNet with one transformer layer per
attention block (of 1, 2 and 10). That keeps every code path a real checkpoint takes (head dimension
128 in the fused attention, T5-XXL's relative attention buckets at d_model 4096, the real VAEs) and the
denoisers' FP32 ONNX past protobuf's 2 GB (external data), while one of them still loads and runs here.
Random weights from a fixed seed. The tokenizers are full size: CLIP's with OpenAI's real merges (read
from the open-clip-torch wheel, clip_merges.py), FLUX's T5 a Unigram of T5's size and ids
(`build_t5_tokenizer(real_size=True)`), so a prompt meets the vocabularies the encoders are sized for.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
)

from benchmarks.gpu_reference import FLUX_VAE, SDXL_UNET, SDXL_VAE
from export.clip_merges import clip_merges, clip_wheel
from export.tiny import (
    CLIP_BANG,
    CLIP_EOS,
    FLUX_VAE_SCALING_FACTOR,
    FLUX_VAE_SHIFT_FACTOR,
    SDXL_VAE_SCALING_FACTOR,
    build_clip_tokenizer,
    build_t5_tokenizer,
    flux_scheduler,
    sdxl_scheduler,
)

# black-forest-labs/FLUX.1-schnell and -dev, transformer/config.json: diffusers' FluxTransformer2DModel
# defaults are these values (patch_size 1, in_channels 64, 24 heads of 128, joint_attention_dim 4096,
# pooled_projection_dim 768, axes_dims_rope (16, 56, 56)); the depth is cut from 19 and 38 blocks.
FLUX_DEPTH: dict[str, Any] = {"num_layers": 1, "num_single_layers": 2}
# openai/clip-vit-large-patch14's text model: FLUX.1's and SDXL's text_encoder/config.json.
CLIP_L: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
# OpenCLIP ViT-bigG/14's text model: stabilityai/stable-diffusion-xl-base-1.0 text_encoder_2/config.json.
CLIP_BIG_G: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
CLIP_LAYERS = 2
"""Of 12 (CLIP-L) and 32 (bigG): two, so SDXL's read of the penultimate layer is a layer's output."""
# google/t5-v1_1-xxl: FLUX.1's text_encoder_2/config.json.
T5_XXL: dict[str, Any] = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "layer_norm_epsilon": 1e-6,
}
T5_LAYERS = 1
"""Of 24."""
VAE_SAMPLE_SIZE = 1024
"""Both VAEs' published `sample_size` (the tile size diffusers' tiled decoding starts from)."""
SDXL_UNET_DEPTH: dict[str, Any] = {"transformer_layers_per_block": (1, 1, 1)}
"""Of (1, 2, 10), the mid block's 10 included: 641 M parameters of 2,567 M, still 2.6 GB in FP32."""


def clip_text_config(published: dict[str, Any], tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    """The pooled output is read at `eos_token_id`, so the special ids come from the tokenizer."""
    return CLIPTextConfig(
        **published,
        num_hidden_layers=CLIP_LAYERS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def seeded(seed: int, build: Callable[[], Any]) -> Any:
    """Each component from its own fresh seed: the same bytes whatever was built before it."""
    torch.manual_seed(seed)
    return build()


def flux_models(seed: int, dev: bool, tokenizer: CLIPTokenizer, tokenizer_2: Any) -> dict[str, torch.nn.Module]:
    """FLUX.1 [schnell|dev]'s models at the published widths; dev with its guidance embedder."""
    t5 = T5Config(
        **T5_XXL, num_layers=T5_LAYERS, pad_token_id=tokenizer_2.pad_token_id, eos_token_id=tokenizer_2.eos_token_id
    )
    return {
        "text_encoder": seeded(seed, lambda: CLIPTextModel(clip_text_config(CLIP_L, tokenizer))),
        "text_encoder_2": seeded(seed, lambda: T5EncoderModel(t5)),
        "transformer": seeded(seed, lambda: FluxTransformer2DModel(**FLUX_DEPTH, guidance_embeds=dev)),
        "vae": seeded(
            seed,
            lambda: AutoencoderKL(
                **FLUX_VAE,
                sample_size=VAE_SAMPLE_SIZE,
                scaling_factor=FLUX_VAE_SCALING_FACTOR,
                shift_factor=FLUX_VAE_SHIFT_FACTOR,
            ),
        ),
    }


def sdxl_models(seed: int, tokenizer: CLIPTokenizer, tokenizer_2: CLIPTokenizer) -> dict[str, torch.nn.Module]:
    """SDXL base's models at the published widths; text_encoder_2 seeded apart from text_encoder."""
    return {
        "vae": seeded(
            seed, lambda: AutoencoderKL(**SDXL_VAE, sample_size=VAE_SAMPLE_SIZE, scaling_factor=SDXL_VAE_SCALING_FACTOR)
        ),
        "text_encoder": seeded(seed, lambda: CLIPTextModel(clip_text_config(CLIP_L, tokenizer))),
        "text_encoder_2": seeded(
            seed + 1, lambda: CLIPTextModelWithProjection(clip_text_config(CLIP_BIG_G, tokenizer_2))
        ),
        "unet": seeded(seed, lambda: UNet2DConditionModel(**{**SDXL_UNET, **SDXL_UNET_DEPTH})),
    }


def real_clip_tokenizer(pad_token: str = CLIP_EOS) -> CLIPTokenizer:
    """CLIP's tokenizer with its 49,408 published tokens; SDXL's second pads with `!`."""
    return build_clip_tokenizer(pad_token, merges=clip_merges(clip_wheel()))


def build_flux(seed: int, dev: bool) -> FluxPipeline:
    tokenizer, tokenizer_2 = real_clip_tokenizer(), build_t5_tokenizer(real_size=True)
    return FluxPipeline(
        scheduler=flux_scheduler(dev),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        **flux_models(seed, dev, tokenizer, tokenizer_2),
    )


def build_sdxl(seed: int) -> StableDiffusionXLPipeline:
    tokenizer, tokenizer_2 = real_clip_tokenizer(), real_clip_tokenizer(CLIP_BANG)
    return StableDiffusionXLPipeline(
        scheduler=sdxl_scheduler(),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        force_zeros_for_empty_prompt=True,
        **sdxl_models(seed, tokenizer, tokenizer_2),
    )


REAL_WIDTH: dict[str, Callable[[int], DiffusionPipeline]] = {
    "flux-schnell": functools.partial(build_flux, dev=False),
    "flux-dev": functools.partial(build_flux, dev=True),
    "sdxl": build_sdxl,
}
