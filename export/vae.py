"""VAE wrappers shared by every family: the checkpoint's scaling and shift factors live in the graph.

The frontend then works in the denoiser's latent space and in RGB [0, 1] only, and never
hard-codes a family's factors (FLUX: scaling and shift; SDXL: scaling only).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL


class VaeDecoder(torch.nn.Module):
    """Denoiser latents in, RGB in [0, 1] out (the pipelines' decode and postprocess, in the graph)."""

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(vae.config.shift_factor or 0.0)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        latent = latent / self.scaling_factor + self.shift_factor
        image = self.vae.decode(latent, return_dict=False)[0]
        return (image / 2 + 0.5).clamp(0, 1)


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
