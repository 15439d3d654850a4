"""VAE wrappers and their tensor contracts, shared by every family: the checkpoint's scaling and
shift factors live in the graph.

The frontend then works in the denoiser's latent space, sends RGB [0, 1] to the encoder and gets
uint8 pixels from the decoder, and never hard-codes a family's factors (FLUX: scaling and shift;
SDXL: scaling only).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL

from export.components import BATCH, Component, TensorSpec
from families.family import VAE_DECODER, VAE_ENCODER


class VaeDecoder(torch.nn.Module):
    """Denoiser latents in, (B, H, W, 3) uint8 RGB out: the pipelines' decode and postprocess and
    diffusers' `numpy_to_pil` rounding, in the graph.

    Pixels cross ONNX Runtime, Triton and HTTP at a quarter of float32's size (3 MB, not 12, at
    1024x1024), and the frontend does no conversion. The order is `numpy_to_pil`'s exactly: clamp to
    [0, 1], multiply by 255 in float32, round half to even (torch, numpy and ONNX `Round` agree), cast.
    """

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(vae.config.shift_factor or 0.0)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        latent = latent / self.scaling_factor + self.shift_factor
        # Pixels are rounded in FP32 whatever the weights' dtype: bf16 cannot tell 254 from 255.
        image: torch.Tensor = self.vae.decode(latent, return_dict=False)[0].to(torch.float32)
        image = (image / 2 + 0.5).clamp(0, 1)
        return (image * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


class VaeEncoder(torch.nn.Module):
    """RGB in [0, 1] in; the latent distribution's mean and std out, already in denoiser latent space.

    diffusers' img2img pipelines sample `mean + std * noise`; returning both lets the frontend draw
    that noise from the request's documented seed instead of a torch generator.
    """

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(vae.config.shift_factor or 0.0)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        distribution = self.vae.encode(image * 2 - 1).latent_dist
        mean = (distribution.mean - self.shift_factor) * self.scaling_factor
        return mean, distribution.std * self.scaling_factor


def vae_components(config: Any) -> tuple[Component, Component]:
    """The `vae_decoder` and `vae_encoder` models, for `VaeDecoder` and `VaeEncoder` of the VAE of
    `config`; its `force_upcast` is diffusers' own mark of a VAE that overflows FP16 (SDXL's)."""
    latent = (BATCH, config.latent_channels, "latent_height", "latent_width")
    overflows_fp16 = bool(config.get("force_upcast", True))
    image = (BATCH, 3, "height", "width")
    decoder = Component(
        name=VAE_DECODER.name,
        subfolder="vae",
        inputs=(TensorSpec("latent", "FP32", latent),),
        outputs=(TensorSpec("image", "UINT8", (BATCH, "height", "width", 3)),),
        sample_sizes={BATCH: 2, "latent_height": 16, "latent_width": 16},
        overflows_fp16=overflows_fp16,
    )
    encoder = Component(
        name=VAE_ENCODER.name,
        subfolder="vae",
        inputs=(TensorSpec("image", "FP32", image),),
        outputs=(TensorSpec("latent_mean", "FP32", latent), TensorSpec("latent_std", "FP32", latent)),
        sample_sizes={BATCH: 2, "height": 128, "width": 128},
        overflows_fp16=overflows_fp16,
    )
    return decoder, encoder
