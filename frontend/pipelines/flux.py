"""FLUX.1 [schnell|dev]: what the shared pipeline (pipeline.py) runs FLUX's way: CLIP's pooled vector
and T5's tokens, the flow-matching schedule, packed latents with their position ids, embedded guidance.

Each step mirrors diffusers' FluxPipeline (pipeline_flux.py) so the served image equals diffusers'
image for the same weights, prompt, steps and initial latents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from families.flux import CLIP, FLUX, T5
from frontend.accounting import InferenceClock
from frontend.pipelines.job import GenerationJob
from frontend.pipelines.noise import noise_batch
from frontend.pipelines.pipeline import DiffusionPipeline, PromptEmbeddings, Schedule
from frontend.pipelines.schedulers import FlowMatchEuler
from frontend.triton import TritonClient

PACKING = FLUX.latent_packing
"""FLUX packs 2x2 latent pixels into one token, so sides are multiples of vae_scale_factor * 2."""


def pack_latents(latents: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(B, C, H, W) -> (B, H/2 * W/2, C * 4), as FluxPipeline._pack_latents."""
    b, c, h, w = latents.shape
    packed = latents.reshape(b, c, h // 2, 2, w // 2, 2).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(packed.reshape(b, (h // 2) * (w // 2), c * 4))


def unpack_latents(packed: npt.NDArray[np.float32], latent_height: int, latent_width: int) -> npt.NDArray[np.float32]:
    """Inverse of `pack_latents`, as FluxPipeline._unpack_latents."""
    b, _, channels = packed.shape
    latents = packed.reshape(b, latent_height // 2, latent_width // 2, channels // 4, 2, 2).transpose(0, 3, 1, 4, 2, 5)
    return np.ascontiguousarray(latents.reshape(b, channels // 4, latent_height, latent_width))


def initial_latents(
    seeds: list[int], height: int, width: int, channels: int = 16, vae_scale_factor: int = 8
) -> npt.NDArray[np.float32]:
    """The packed initial latents of a request: `initial_noise(seed, (C, H/8, W/8))` per image.

    Pass this as `latents=` to diffusers' FluxPipeline to get the served image.
    """
    return pack_latents(noise_batch(seeds, (channels, height // vae_scale_factor, width // vae_scale_factor)))


def img2img_start(steps: int, strength: float) -> int:
    """The first step run from a noised input image, as the img2img pipelines' get_timesteps."""
    return int(max(steps - min(steps * strength, steps), 0))


def latent_image_ids(latent_height: int, latent_width: int) -> npt.NDArray[np.float32]:
    """Position ids (0, row, column) of each packed token, as FluxPipeline._prepare_latent_image_ids."""
    rows, cols = np.meshgrid(np.arange(latent_height // 2), np.arange(latent_width // 2), indexing="ij")
    ids: npt.NDArray[np.float32] = np.stack([np.zeros_like(rows), rows, cols], axis=-1).astype(np.float32)
    return ids.reshape(-1, 3)


@dataclass(frozen=True, kw_only=True)
class FluxPipeline(DiffusionPipeline):
    TEXT_ENCODER_OUTPUTS: ClassVar[Mapping[str, tuple[str, ...]]] = {
        CLIP.name: ("pooled_embeds",),
        T5.name: ("prompt_embeds",),
    }

    scheduler: FlowMatchEuler
    guidance_embeds: bool

    @classmethod
    def from_metadata(cls, name: str, metadata: Mapping[str, Any], triton: TritonClient) -> FluxPipeline:
        return cls(
            scheduler=FlowMatchEuler.from_config(metadata["scheduler"]),
            guidance_embeds=bool(metadata["guidance_embeds"]),
            **cls._metadata_fields(name, FLUX, metadata, triton),
        )

    def guidance_scale(self, job: GenerationJob) -> float | None:
        """True CFG (diffusers' `true_cfg_scale`) where a negative prompt is given; FLUX.1-dev's own
        guidance is a denoiser input instead (`conditioning`)."""
        return None if job.negative_prompt is None else job.true_cfg_scale

    img2img_start = staticmethod(img2img_start)

    def schedule(self, job: GenerationJob) -> Schedule:
        """FluxPipeline's sigmas, shifted for the image's token count where the scheduler says so."""
        latent_height, latent_width = job.height // self.vae_scale_factor, job.width // self.vae_scale_factor
        return self.scheduler.schedule(job.steps, (latent_height // PACKING) * (latent_width // PACKING))

    def embeddings(self, outputs: Mapping[str, Mapping[str, npt.NDArray[np.float32]]]) -> PromptEmbeddings:
        """T5's tokens for attention, CLIP's pooled vector (FluxPipeline.encode_prompt)."""
        return PromptEmbeddings(
            prompt_embeds=outputs[T5.name]["prompt_embeds"], pooled=outputs[CLIP.name]["pooled_embeds"]
        )

    async def conditioning(
        self, job: GenerationJob, embeddings: PromptEmbeddings, clock: InferenceClock
    ) -> dict[str, npt.NDArray[np.float32]]:
        """The prompt, the image tokens' position ids, and FLUX.1-dev's embedded guidance."""
        rows = len(embeddings.pooled)
        ids = latent_image_ids(job.height // self.vae_scale_factor, job.width // self.vae_scale_factor)
        inputs = {
            "encoder_hidden_states": embeddings.prompt_embeds,
            "pooled_projections": embeddings.pooled,
            "img_ids": np.ascontiguousarray(np.broadcast_to(ids, (rows, *ids.shape))),
        }
        if self.guidance_embeds:
            inputs["guidance"] = np.full((rows, 1), job.guidance, dtype=np.float32)
        return inputs

    def step_inputs(
        self, latents: npt.NDArray[np.float32], sigma: np.float32, timestep: np.float32
    ) -> dict[str, npt.NDArray[np.float32]]:
        # FluxPipeline passes timestep / 1000; the transformer scales it back inside.
        return {
            "hidden_states": latents,
            "timestep": np.full((len(latents), 1), timestep / np.float32(1000), dtype=np.float32),
        }

    def pack(self, latents: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return pack_latents(latents)

    def unpack(self, latents: npt.NDArray[np.float32], job: GenerationJob) -> npt.NDArray[np.float32]:
        return unpack_latents(latents, job.height // self.vae_scale_factor, job.width // self.vae_scale_factor)
