"""SDXL: prompt encoding, the Euler loop with classifier-free guidance and VAE decoding, all through Triton.

Text-to-image mirrors diffusers' StableDiffusionXLPipeline (pipeline_stable_diffusion_xl.py) and
image-to-image its StableDiffusionXLImg2ImgPipeline (pipeline_stable_diffusion_xl_img2img.py), so
the served image equals diffusers' for the same weights, prompts, steps and starting latents
(`initial_latents`, `img2img_latents`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from families.family import TOKENIZER, VAE_DECODER, VAE_ENCODER
from families.sdxl import CLIP, CLIP_2, SDXL, UNET
from frontend.accounting import InferenceClock
from frontend.adapters import denoiser_inputs
from frontend.pipelines.job import Generation, GenerationJob
from frontend.pipelines.noise import noise_batch
from frontend.pipelines.pipeline import DiffusionPipeline
from frontend.pipelines.prompt_cache import Encoded
from frontend.pipelines.schedulers import EulerDiscrete
from frontend.pipelines.stages import decode_latents, encode_images, tokenize
from frontend.progress import Progress
from frontend.triton import TritonClient

CROP_TOP_LEFT = (0, 0)
"""`crops_coords_top_left`'s default in both pipelines."""


def initial_latents(
    seeds: list[int], height: int, width: int, channels: int = 4, vae_scale_factor: int = 8
) -> np.ndarray:
    """The text-to-image initial noise: `initial_noise(seed, (C, H/8, W/8))` per image.

    Pass this as `latents=` to diffusers' StableDiffusionXLPipeline to get the served image: its
    prepare_latents multiplies the given latents by the scheduler's init_noise_sigma, as `generate` does.
    """
    return noise_batch(seeds, (channels, height // vae_scale_factor, width // vae_scale_factor))


def img2img_latents(image_latents: np.ndarray, seeds: list[int], sigma: np.float32) -> np.ndarray:
    """The image-to-image starting latents: the input images' latents (`stages.sample_posterior`)
    noised to `sigma` with `initial_noise(seed)` per image, as EulerDiscreteScheduler.add_noise.

    Pass this as `latents=` to diffusers' StableDiffusionXLImg2ImgPipeline, which then neither
    encodes the image nor adds noise, to get the served image.
    """
    return EulerDiscrete.add_noise(image_latents, noise_batch(seeds, image_latents.shape[1:]), sigma)


def img2img_start(steps: int, strength: float) -> int:
    """The first step of an image-to-image run: StableDiffusionXLImg2ImgPipeline.get_timesteps
    (denoising_start None) runs the last int(steps * strength) steps of the schedule."""
    return steps - min(int(steps * strength), steps)


def add_time_ids(height: int, width: int) -> np.ndarray:
    """`_get_add_time_ids` with the pipelines' defaults: original and target size (height, width), no crop.

    The img2img pipeline gives the same six numbers, as its `requires_aesthetics_score` is False
    unless the checkpoint asks for it, which only the refiner (not a StableDiffusionXLPipeline) does.
    """
    return np.array([height, width, *CROP_TOP_LEFT, height, width], dtype=np.float32)


@dataclass(frozen=True, kw_only=True)
class SDXLPipeline(DiffusionPipeline):
    scheduler: EulerDiscrete
    force_zeros_for_empty_prompt: bool

    @classmethod
    def from_metadata(cls, name: str, metadata: Mapping[str, Any], triton: TritonClient) -> SDXLPipeline:
        return cls(
            scheduler=EulerDiscrete.from_config(metadata["scheduler"]),
            # StableDiffusionXLPipeline's default, for checkpoints whose model_index.json omits it.
            force_zeros_for_empty_prompt=bool(metadata.get("force_zeros_for_empty_prompt", True)),
            **cls._metadata_fields(name, SDXL, metadata, triton),
        )

    async def generate(self, job: GenerationJob, progress: Progress) -> Generation:
        clock = InferenceClock()
        sigmas, timesteps = self.scheduler.schedule(job.steps)
        start, latents = await self.prepare_latents(job, sigmas, clock)
        prompt_embeds, pooled, truncated = await self.encode_prompt(job, clock)
        latents = await self.denoise(latents, prompt_embeds, pooled, job, sigmas, timesteps, start, clock, progress)
        images = await decode_latents(self.triton, self._model(VAE_DECODER.name), latents, clock)
        return Generation(images=images, compute_seconds=clock.seconds, prompt_truncated=truncated)

    def passes(self, job: GenerationJob) -> int:
        return 2 if job.guidance > 1 else 1  # StableDiffusionXLPipeline.do_classifier_free_guidance

    img2img_start = staticmethod(img2img_start)

    async def encode_prompt(self, job: GenerationJob, clock: InferenceClock) -> tuple[np.ndarray, np.ndarray, bool]:
        """(prompt embeddings, pooled embeddings, truncated): rows [unconditional, conditional] when guided.

        As StableDiffusionXLPipeline.encode_prompt, the unconditional row is zeros when no negative
        prompt is given and the checkpoint says force_zeros_for_empty_prompt, else the encoded
        negative prompt ("" when none).
        """
        if self.passes(job) == 1:
            return await self.encode_prompts([job.prompt], job.caller, clock)
        if job.negative_prompt is None and self.force_zeros_for_empty_prompt:
            embeds, pooled, truncated = await self.encode_prompts([job.prompt], job.caller, clock)
            zeros = np.concatenate([np.zeros_like(embeds), embeds]), np.concatenate([np.zeros_like(pooled), pooled])
            return *zeros, truncated
        return await self.encode_prompts([job.negative_prompt or "", job.prompt], job.caller, clock)

    async def _encode_prompts(self, prompts: list[str], clock: InferenceClock) -> Encoded:
        ids = await tokenize(self.triton, self._model(TOKENIZER.name), prompts, self.text_encoders, clock)
        first, second = await asyncio.gather(
            self.triton.infer(
                self._model(CLIP.name), {"input_ids": ids[f"{CLIP.name}_input_ids"]}, ["prompt_embeds"], clock
            ),
            self.triton.infer(
                self._model(CLIP_2.name),
                {"input_ids": ids[f"{CLIP_2.name}_input_ids"]},
                ["prompt_embeds", "text_embeds"],
                clock,
            ),
        )
        embeds = np.concatenate([first["prompt_embeds"], second["prompt_embeds"]], axis=-1)
        return (embeds, second["text_embeds"]), ids["prompt_truncated"]

    async def prepare_latents(
        self, job: GenerationJob, sigmas: np.ndarray, clock: InferenceClock
    ) -> tuple[int, np.ndarray]:
        """(first step, its latents): the seeds' noise at the schedule's start, or the input images
        noised to the sigma of the first step that `strength` keeps."""
        if job.init_images is None:
            noise = initial_latents(job.seeds, job.height, job.width, self.latent_channels, self.vae_scale_factor)
            return 0, noise * self.scheduler.init_noise_sigma(sigmas)
        start = img2img_start(job.steps, job.strength)
        image_latents = await encode_images(
            self.triton, self._model(VAE_ENCODER.name), job.init_images, job.seeds, clock
        )
        return start, img2img_latents(image_latents, job.seeds, sigmas[start])

    async def denoise(
        self,
        latents: np.ndarray,
        prompt_embeds: np.ndarray,
        pooled: np.ndarray,
        job: GenerationJob,
        sigmas: np.ndarray,
        timesteps: np.ndarray,
        start: int,
        clock: InferenceClock,
        progress: Progress,
    ) -> np.ndarray:
        """The Euler loop from step `start`: one UNet call per step for the whole batch.

        Under guidance the unconditional half rides in the same call, rows [unconditional x n,
        conditional x n] as the pipeline's torch.cat builds them.
        """
        n = len(latents)
        copies = len(pooled)
        inputs = {
            "encoder_hidden_states": np.repeat(prompt_embeds, n, axis=0),
            "text_embeds": np.repeat(pooled, n, axis=0),
            "time_ids": np.tile(add_time_ids(job.height, job.width), (copies * n, 1)),
            **denoiser_inputs(self.lora, job.lora, copies * n),
        }
        for index in range(start, len(timesteps)):
            sigma = sigmas[index]
            inputs["sample"] = self.scheduler.scale_model_input(np.concatenate([latents] * copies), sigma)
            inputs["timestep"] = np.full((copies * n, 1), timesteps[index], dtype=np.float32)
            result = await self.triton.infer(self._model(UNET.name), inputs, ["noise_pred"], clock)
            noise_pred = result["noise_pred"]
            if copies == 2:
                unconditional, conditional = noise_pred[:n], noise_pred[n:]
                noise_pred = unconditional + np.float32(job.guidance) * (conditional - unconditional)
            latents = self.scheduler.step(latents, noise_pred, sigma, sigmas[index + 1])
            progress.stepped(index + 1, len(timesteps))
        return latents
