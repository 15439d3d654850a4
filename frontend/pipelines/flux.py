"""FLUX.1 [schnell|dev]: prompt encoding, the flow-matching loop and VAE decoding, all through Triton.

Each step mirrors diffusers' FluxPipeline (pipeline_flux.py) so the served image equals diffusers'
image for the same weights, prompt, steps and initial latents.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from families.family import TOKENIZER, VAE_DECODER, VAE_ENCODER
from families.flux import CLIP, FLUX, T5, TRANSFORMER
from frontend.accounting import InferenceClock
from frontend.adapters import denoiser_inputs
from frontend.pipelines.job import Generation, GenerationJob
from frontend.pipelines.noise import noise_batch
from frontend.pipelines.pipeline import DiffusionPipeline
from frontend.pipelines.prompt_cache import Encoded
from frontend.pipelines.schedulers import FlowMatchEuler
from frontend.pipelines.stages import decode_latents, encode_images, tokenize
from frontend.progress import Progress
from frontend.triton import TritonClient

PACKING = FLUX.latent_packing
"""FLUX packs 2x2 latent pixels into one token, so sides are multiples of vae_scale_factor * 2."""


def pack_latents(latents: np.ndarray) -> np.ndarray:
    """(B, C, H, W) -> (B, H/2 * W/2, C * 4), as FluxPipeline._pack_latents."""
    b, c, h, w = latents.shape
    packed = latents.reshape(b, c, h // 2, 2, w // 2, 2).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(packed.reshape(b, (h // 2) * (w // 2), c * 4))


def unpack_latents(packed: np.ndarray, latent_height: int, latent_width: int) -> np.ndarray:
    """Inverse of `pack_latents`, as FluxPipeline._unpack_latents."""
    b, _, channels = packed.shape
    latents = packed.reshape(b, latent_height // 2, latent_width // 2, channels // 4, 2, 2).transpose(0, 3, 1, 4, 2, 5)
    return np.ascontiguousarray(latents.reshape(b, channels // 4, latent_height, latent_width))


def initial_latents(
    seeds: list[int], height: int, width: int, channels: int = 16, vae_scale_factor: int = 8
) -> np.ndarray:
    """The packed initial latents of a request: `initial_noise(seed, (C, H/8, W/8))` per image.

    Pass this as `latents=` to diffusers' FluxPipeline to get the served image.
    """
    return pack_latents(noise_batch(seeds, (channels, height // vae_scale_factor, width // vae_scale_factor)))


def img2img_start(steps: int, strength: float) -> int:
    """The first step run from a noised input image, as the img2img pipelines' get_timesteps."""
    return int(max(steps - min(steps * strength, steps), 0))


def latent_image_ids(latent_height: int, latent_width: int) -> np.ndarray:
    """Position ids (0, row, column) of each packed token, as FluxPipeline._prepare_latent_image_ids."""
    rows, cols = np.meshgrid(np.arange(latent_height // 2), np.arange(latent_width // 2), indexing="ij")
    ids = np.stack([np.zeros_like(rows), rows, cols], axis=-1).astype(np.float32)
    return ids.reshape(-1, 3)


@dataclass(frozen=True, kw_only=True)
class FluxPipeline(DiffusionPipeline):
    scheduler: FlowMatchEuler
    guidance_embeds: bool

    @classmethod
    def from_metadata(cls, name: str, metadata: Mapping[str, Any], triton: TritonClient) -> FluxPipeline:
        return cls(
            scheduler=FlowMatchEuler.from_config(metadata["scheduler"]),
            guidance_embeds=bool(metadata["guidance_embeds"]),
            **cls._metadata_fields(name, FLUX, metadata, triton),
        )

    async def generate(self, job: GenerationJob, progress: Progress) -> Generation:
        clock = InferenceClock()
        latent_height, latent_width = job.height // self.vae_scale_factor, job.width // self.vae_scale_factor
        prompts = [job.prompt] if job.negative_prompt is None else [job.prompt, job.negative_prompt]
        pooled, prompt_embeds, truncated = await self.encode_prompts(prompts, job.caller, clock)
        sigmas, timesteps = self.scheduler.schedule(job.steps, (latent_height // PACKING) * (latent_width // PACKING))
        start = 0
        noise = noise_batch(job.seeds, (self.latent_channels, latent_height, latent_width))
        if job.init_images is None:
            latents = noise
        else:
            start = img2img_start(job.steps, job.strength)
            image_latents = await encode_images(
                self.triton, self._model(VAE_ENCODER.name), job.init_images, job.seeds, clock
            )
            sigma = sigmas[start]
            # FlowMatchEulerDiscreteScheduler.scale_noise at the first remaining timestep.
            latents = sigma * noise + (np.float32(1.0) - sigma) * image_latents
        latents = await self.denoise(
            pack_latents(latents), pooled, prompt_embeds, job, sigmas, timesteps, start, clock, progress
        )
        images = await decode_latents(
            self.triton, self._model(VAE_DECODER.name), unpack_latents(latents, latent_height, latent_width), clock
        )
        return Generation(images=images, compute_seconds=clock.seconds, prompt_truncated=truncated)

    def passes(self, job: GenerationJob) -> int:
        """True CFG: the negative prompt's pass rides in the same denoiser call (`denoise`)."""
        return 1 if job.negative_prompt is None else 2

    img2img_start = staticmethod(img2img_start)

    async def _encode_prompts(self, prompts: list[str], clock: InferenceClock) -> Encoded:
        ids = await tokenize(self.triton, self._model(TOKENIZER.name), prompts, self.text_encoders, clock)
        clip, t5 = await asyncio.gather(
            self.triton.infer(
                self._model(CLIP.name), {"input_ids": ids[f"{CLIP.name}_input_ids"]}, ["pooled_embeds"], clock
            ),
            self.triton.infer(
                self._model(T5.name), {"input_ids": ids[f"{T5.name}_input_ids"]}, ["prompt_embeds"], clock
            ),
        )
        return (clip["pooled_embeds"], t5["prompt_embeds"]), ids["prompt_truncated"]

    async def denoise(
        self,
        latents: np.ndarray,
        pooled: np.ndarray,
        prompt_embeds: np.ndarray,
        job: GenerationJob,
        sigmas: np.ndarray,
        timesteps: np.ndarray,
        start: int,
        clock: InferenceClock,
        progress: Progress,
    ) -> np.ndarray:
        """The flow-matching loop from step `start`: one transformer call per step for the whole batch.

        With a negative prompt (true CFG), the unconditional half rides in the same call.
        """
        n = len(latents)
        copies = len(pooled)  # 2 with a negative prompt: rows [positive x n, negative x n]
        ids = latent_image_ids(job.height // self.vae_scale_factor, job.width // self.vae_scale_factor)
        inputs = {
            "encoder_hidden_states": np.repeat(prompt_embeds, n, axis=0),
            "pooled_projections": np.repeat(pooled, n, axis=0),
            "img_ids": np.ascontiguousarray(np.broadcast_to(ids, (copies * n, *ids.shape))),
        }
        if self.guidance_embeds:
            inputs["guidance"] = np.full((copies * n, 1), job.guidance, dtype=np.float32)
        inputs.update(denoiser_inputs(self.lora, job.lora, copies * n))
        for index in range(start, len(timesteps)):
            # FluxPipeline passes timestep / 1000; the transformer scales it back inside.
            inputs["timestep"] = np.full((copies * n, 1), timesteps[index] / np.float32(1000), dtype=np.float32)
            inputs["hidden_states"] = np.concatenate([latents] * copies)
            result = await self.triton.infer(self._model(TRANSFORMER.name), inputs, ["noise_pred"], clock)
            noise_pred = result["noise_pred"]
            if copies == 2:
                positive, negative = noise_pred[:n], noise_pred[n:]
                noise_pred = negative + np.float32(job.true_cfg_scale) * (positive - negative)
            latents = self.scheduler.step(latents, noise_pred, sigmas[index], sigmas[index + 1])
            progress.stepped(index + 1, len(timesteps))
        return latents
