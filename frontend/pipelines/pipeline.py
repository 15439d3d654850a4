"""The diffusion pipeline every family runs: prompt encoding through the prompt cache, the starting
latents (the seeds' noise, or an input image noised to the first step `strength` keeps), the
denoising loop with classifier-free guidance, LoRA inputs and progress, and VAE decoding.

A family (flux.py, sdxl.py) supplies what differs, each mirroring its diffusers pipeline: its
scheduler's setup (`schedule`), its text encoders' outputs as `PromptEmbeddings`, what its denoiser
takes (`conditioning` once per request, `step_inputs` at each step), its guidance scale, and its
latent packing. Cancellation needs nothing of its own: a cancelled request's task stops at its next
Triton call.
"""

from __future__ import annotations

import asyncio
import functools
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from families.family import TOKENIZER, VAE_DECODER, VAE_ENCODER, Family
from families.triton_models import model_name
from frontend.accounting import InferenceClock
from frontend.adapters import LORA_PARAMETERS, LoraLayout, denoiser_inputs
from frontend.pipelines.inpainting import KnownRegion, latent_mask
from frontend.pipelines.job import Generation, GenerationJob, Limits
from frontend.pipelines.noise import noise_batch
from frontend.pipelines.previews import Previews, preview_steps
from frontend.pipelines.prompt_cache import Encoded, PromptCache
from frontend.pipelines.schedulers import Scheduler
from frontend.pipelines.stages import decode_latents, encode_images, tokenize
from frontend.progress import Progress
from frontend.triton import TritonClient

Schedule = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]
"""(sigmas with the terminal 0 appended, timesteps), as the family's scheduler sets them."""


@dataclass(frozen=True)
class PromptEmbeddings:
    """The text encoders' outputs for a batch of prompts, one row per prompt: under guidance, rows
    [unconditional, conditional], as diffusers' torch.cat builds them."""

    prompt_embeds: npt.NDArray[np.float32]
    """Per token: what the denoiser's attention reads (`encoder_hidden_states`)."""
    pooled: npt.NDArray[np.float32]
    """One vector per prompt (FLUX's `pooled_projections`, SDXL's `text_embeds`)."""

    def repeat(self, n: int) -> PromptEmbeddings:
        """Each row `n` times in a row: one per image of the request."""
        if n == 1:
            return self
        return PromptEmbeddings(np.repeat(self.prompt_embeds, n, axis=0), np.repeat(self.pooled, n, axis=0))

    def with_zeros_unconditional(self) -> PromptEmbeddings:
        """Zeros as the unconditional row before each row (`force_zeros_for_empty_prompt`)."""
        return PromptEmbeddings(
            np.concatenate([np.zeros_like(self.prompt_embeds), self.prompt_embeds]),
            np.concatenate([np.zeros_like(self.pooled), self.pooled]),
        )


@dataclass(frozen=True, kw_only=True)
class DiffusionPipeline(ABC):
    """One served model. Frozen: a flavour or a pinned version is a copy (`dataclasses.replace`)."""

    TEXT_ENCODER_OUTPUTS: ClassVar[Mapping[str, tuple[str, ...]]]
    """Text encoder component -> the outputs `embeddings` reads from it."""

    name: str
    family: Family
    """Its declaration (families/): components, sizes and bounds."""
    triton: TritonClient
    scheduler: Scheduler
    latent_channels: int
    vae_scale_factor: int
    text_encoders: Mapping[str, int]
    """Each text encoder's token length, as the tokenizer model pads and truncates."""
    limits: Limits
    lora: LoraLayout | None
    """The denoiser's LoRA layers and rank budget; None where it was exported without them."""
    force_zeros_for_empty_prompt: bool = False
    """Under guidance without a negative prompt, zeros as the unconditional embeddings (SDXL's config)."""
    prompt_cache: PromptCache = field(default_factory=PromptCache, compare=False, repr=False)
    """Shared by the copies a version or flavour makes (`dataclasses.replace` keeps it)."""

    @staticmethod
    def _metadata_fields(
        name: str, family: Family, metadata: Mapping[str, Any], triton: TritonClient
    ) -> dict[str, Any]:
        """The fields above from the denoiser's pipeline metadata (export/repository.py writes it) and
        the family's declaration: the variant's request parameters, LoRA's added where it was exported."""
        lora = LoraLayout.from_metadata(metadata["lora"]) if "lora" in metadata else None
        parameters = family.served_variant(metadata).parameters | (LORA_PARAMETERS if lora else frozenset())
        return {
            "name": name,
            "family": family,
            "triton": triton,
            "latent_channels": int(metadata["latent_channels"]),
            "vae_scale_factor": int(metadata["vae_scale_factor"]),
            "text_encoders": dict(metadata["text_encoders"]),
            "limits": Limits.of(family, metadata, parameters),
            "lora": lora,
        }

    def _model(self, component: str) -> str:
        return model_name(self.name, component)

    # What a family supplies.

    @abstractmethod
    def guidance_scale(self, job: GenerationJob) -> float | None:
        """The classifier-free guidance scale, None where the job runs no unconditional pass."""

    @staticmethod
    @abstractmethod
    def img2img_start(steps: int, strength: float) -> int:
        """The first step run from a noised input image at `strength`, as the family's diffusers img2img
        pipeline chooses it; the API refuses, before admission, a `strength` that leaves no step to run."""

    @abstractmethod
    def schedule(self, job: GenerationJob) -> Schedule: ...

    @abstractmethod
    def embeddings(self, outputs: Mapping[str, Mapping[str, npt.NDArray[np.float32]]]) -> PromptEmbeddings:
        """The prompts' embeddings from each text encoder's outputs (`TEXT_ENCODER_OUTPUTS`)."""

    @abstractmethod
    async def conditioning(
        self, job: GenerationJob, embeddings: PromptEmbeddings, clock: InferenceClock
    ) -> dict[str, npt.NDArray[np.float32]]:
        """The denoiser's inputs that hold for every step, one row per denoised row (`embeddings`' rows)."""

    @abstractmethod
    def step_inputs(
        self, latents: npt.NDArray[np.float32], sigma: np.float32, timestep: np.float32
    ) -> dict[str, npt.NDArray[np.float32]]:
        """The denoiser's inputs at one step, from the latents of every denoised row."""

    def noise_prediction(
        self, outputs: Mapping[str, npt.NDArray[np.float32]], latents: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """The denoiser's noise prediction for `latents` (the rows `step_inputs` was given), where its
        output holds more, e.g. the predictions of conditioning tokens appended to the latents'."""
        return outputs["noise_pred"]

    def pack(self, latents: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(B, C, H, W) latents as the denoiser takes them (FLUX packs 2x2 cells into tokens)."""
        return latents

    def unpack(self, latents: npt.NDArray[np.float32], job: GenerationJob) -> npt.NDArray[np.float32]:
        """The inverse of `pack`: latents as the VAE decoder takes them."""
        return latents

    # What every family runs the same way.

    def passes(self, job: GenerationJob) -> int:
        """Denoiser rows per image and step: 2 where classifier-free guidance runs an unconditional
        pass beside each image, else 1 (the work budget counts them)."""
        return 1 if self.guidance_scale(job) is None else 2

    async def generate(self, job: GenerationJob, progress: Progress, previews: Previews | None = None) -> Generation:
        """`previews`: where previews of the images go while they are denoised (previews.py)."""
        clock = InferenceClock()
        embeddings, truncated = await self.encode_prompt(job, clock)
        sigmas, timesteps = self.schedule(job)
        start, latents, known = await self.prepare_latents(job, sigmas, clock)
        latents = await self.denoise(
            self.pack(latents), embeddings, job, (sigmas, timesteps), start, clock, progress, previews, known
        )
        images = await decode_latents(self.triton, self._model(VAE_DECODER.name), self.unpack(latents, job), clock)
        return Generation(images=images, compute_seconds=clock.seconds, prompt_truncated=truncated)

    async def encode_prompt(self, job: GenerationJob, clock: InferenceClock) -> tuple[PromptEmbeddings, bool]:
        """The job's embeddings, rows [unconditional, conditional] under guidance, and whether a prompt
        was truncated. As StableDiffusionXLPipeline.encode_prompt, the unconditional row is zeros when no
        negative prompt is given and the checkpoint says force_zeros_for_empty_prompt, else the encoded
        negative prompt ("" when none)."""
        if self.passes(job) == 1:
            return await self.encode_prompts([job.prompt], job.caller, clock)
        if job.negative_prompt is None and self.force_zeros_for_empty_prompt:
            conditional, truncated = await self.encode_prompts([job.prompt], job.caller, clock)
            return conditional.with_zeros_unconditional(), truncated
        return await self.encode_prompts([job.negative_prompt or "", job.prompt], job.caller, clock)

    async def encode_prompts(
        self, prompts: list[str], caller: str, clock: InferenceClock
    ) -> tuple[PromptEmbeddings, bool]:
        """One row per prompt, and whether a prompt was truncated; prompts this caller had this version
        encode before come from the cache."""
        (prompt_embeds, pooled), truncated = await self.prompt_cache.encode(
            caller, self.name, self.triton.model_version, prompts, functools.partial(self._encode_prompts, clock=clock)
        )
        return PromptEmbeddings(prompt_embeds, pooled), truncated

    async def _encode_prompts(self, prompts: list[str], clock: InferenceClock) -> Encoded:
        """The tokenizer and the text encoders, for prompts the cache does not hold."""
        ids = await tokenize(self.triton, self._model(TOKENIZER.name), prompts, self.text_encoders, clock)
        encoders = list(self.TEXT_ENCODER_OUTPUTS.items())
        outputs = await asyncio.gather(
            *(
                self.triton.infer(self._model(encoder), {"input_ids": ids[f"{encoder}_input_ids"]}, list(names), clock)
                for encoder, names in encoders
            )
        )
        embeddings = self.embeddings({encoder: output for (encoder, _), output in zip(encoders, outputs, strict=True)})
        return (embeddings.prompt_embeds, embeddings.pooled), ids["prompt_truncated"]

    def noise(self, job: GenerationJob) -> npt.NDArray[np.float32]:
        """The seeds' documented initial noise (noise.py), unpacked: (n, C, H / scale, W / scale)."""
        shape = (self.latent_channels, job.height // self.vae_scale_factor, job.width // self.vae_scale_factor)
        return noise_batch(job.seeds, shape)

    async def prepare_latents(
        self, job: GenerationJob, sigmas: npt.NDArray[np.float32], clock: InferenceClock
    ) -> tuple[int, npt.NDArray[np.float32], KnownRegion | None]:
        """(first step, its unpacked latents, what a masked edit keeps): the seeds' noise at the
        schedule's start, or the input images' latents noised with it to the sigma of the first step
        that `strength` keeps. A masked edit at strength 1 starts from the noise alone, as
        StableDiffusionXLInpaintPipeline's `is_strength_max` does (FLUX's first sigma, 1, gives the
        noise alone either way)."""
        noise = self.noise(job)
        if job.init_images is None:
            return 0, noise * self.scheduler.init_noise_sigma(sigmas), None
        start = self.img2img_start(job.steps, job.strength)
        image_latents = await encode_images(
            self.triton, self._model(VAE_ENCODER.name), job.init_images, job.seeds, clock
        )
        known = None
        if job.masks is not None:
            mask = np.repeat(latent_mask(job.masks, self.vae_scale_factor), self.latent_channels, axis=1)
            known = KnownRegion(self.pack(image_latents), self.pack(noise), self.pack(mask))
            if job.strength == 1:
                return start, noise * self.scheduler.init_noise_sigma(sigmas), known
        return start, self.scheduler.add_noise(image_latents, noise, sigmas[start]), known

    async def denoise(
        self,
        latents: npt.NDArray[np.float32],
        embeddings: PromptEmbeddings,
        job: GenerationJob,
        schedule: Schedule,
        start: int,
        clock: InferenceClock,
        progress: Progress,
        previews: Previews | None = None,
        known: KnownRegion | None = None,
    ) -> npt.NDArray[np.float32]:
        """The loop from step `start`: one denoiser call per step for the whole batch, the
        unconditional rows (under guidance) riding in the same call before the conditional ones;
        a masked edit's `known` region blended back after each step."""
        sigmas, timesteps = schedule
        previewed = preview_steps(start, len(timesteps), previews.count) if previews else frozenset()
        n = len(latents)
        scale = self.guidance_scale(job)
        copies = self.passes(job)
        conditioning = await self.conditioning(job, embeddings.repeat(n), clock)
        conditioning.update(denoiser_inputs(self.lora, job.lora, copies * n))
        denoiser = self._model(self.family.denoiser.name)
        # Sent to Triton once, not at every step (through shared memory where Triton is on this host).
        async with self.triton.constant_inputs(conditioning) as constants:
            for index in range(start, len(timesteps)):
                rows = np.concatenate([latents] * copies)
                inputs = self.step_inputs(rows, sigmas[index], timesteps[index])
                outputs = await self.triton.infer(denoiser, inputs, ["noise_pred"], clock, constants)
                noise_pred = self.noise_prediction(outputs, rows)
                if scale is not None:
                    unconditional, conditional = noise_pred[:n], noise_pred[n:]
                    noise_pred = unconditional + np.float32(scale) * (conditional - unconditional)
                if previews and index in previewed:
                    await self.preview(latents, noise_pred, sigmas[index], job, clock, previews, known)
                latents = self.scheduler.step(latents, noise_pred, sigmas[index], sigmas[index + 1])
                if known is not None:
                    latents = known.blend(latents, self.scheduler, sigmas[index + 1])
                progress.stepped(index + 1, len(timesteps))
        return latents

    async def preview(
        self,
        latents: npt.NDArray[np.float32],
        noise_pred: npt.NDArray[np.float32],
        sigma: np.float32,
        job: GenerationJob,
        clock: InferenceClock,
        previews: Previews,
        known: KnownRegion | None,
    ) -> None:
        """The clean latents as a step's noise prediction estimates them (a masked edit's kept region:
        the input image's), decoded by the model's VAE and shown; the loop's latents are only read."""
        estimate = self.scheduler.denoised(latents, noise_pred, sigma)
        if known is not None:
            estimate = known.blend(estimate, self.scheduler, np.float32(0))
        images = await decode_latents(self.triton, self._model(VAE_DECODER.name), self.unpack(estimate, job), clock)
        await previews.show(images, clock)
