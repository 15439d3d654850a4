"""Masked edits: the known region of each image kept through the denoising loop, as diffusers'
FluxInpaintPipeline (pipeline_flux_inpaint.py) and StableDiffusionXLInpaintPipeline
(pipeline_stable_diffusion_xl_inpaint.py) do with the base weights (a 16- or 4-channel denoiser).

After every step, the input image's latents, noised with the image's own noise to the next step's
sigma (the clean latents after the last step), replace the latents where the mask is 0. Those
pipelines also encode the masked image, for inpainting checkpoints (SDXL's 9-channel UNet, FLUX.1
Fill) alone; the base weights' loop never reads it, so it is not computed here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from frontend.pipelines.schedulers import ONE, Scheduler


def latent_mask(masks: npt.NDArray[np.float32], vae_scale_factor: int) -> npt.NDArray[np.float32]:
    """(n, 1, H, W) masks at the latents' size: `torch.nn.functional.interpolate` (nearest) in the
    pipelines' prepare_mask_latents picks pixel (8i, 8j) for latent cell (i, j)."""
    return np.ascontiguousarray(masks[:, :, ::vae_scale_factor, ::vae_scale_factor])


@dataclass(frozen=True)
class KnownRegion:
    """What a masked edit keeps, in the denoiser's (packed) layout, one row per image."""

    latents: npt.NDArray[np.float32]
    """The input images' latents (`image_latents` there)."""
    noise: npt.NDArray[np.float32]
    """Each image's initial noise, which re-noises the known region at every step."""
    mask: npt.NDArray[np.float32]
    """1 where the image is repainted, 0 where it is kept, over every latent channel."""

    def blend(
        self, latents: npt.NDArray[np.float32], scheduler: Scheduler, sigma_next: np.float32
    ) -> npt.NDArray[np.float32]:
        """`(1 - mask) * init_latents_proper + mask * latents` after a step to `sigma_next`; at the
        terminal sigma 0, `add_noise` returns the clean latents exactly, as the pipelines' last step
        uses them unnoised."""
        known = scheduler.add_noise(self.latents, self.noise, sigma_next)
        return (ONE - self.mask) * known + self.mask * latents
