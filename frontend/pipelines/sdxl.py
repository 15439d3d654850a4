"""SDXL: what the shared pipeline (pipeline.py) runs SDXL's way: two CLIP encoders, the Euler schedule,
classic classifier-free guidance, the size micro-conditioning.

Text-to-image mirrors diffusers' StableDiffusionXLPipeline (pipeline_stable_diffusion_xl.py) and
image-to-image its StableDiffusionXLImg2ImgPipeline (pipeline_stable_diffusion_xl_img2img.py), so
the served image equals diffusers' for the same weights, prompts, steps and starting latents
(`initial_latents`; for img2img, the input image's latents noised as DiffusionPipeline.prepare_latents does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from families.sdxl import CLIP, CLIP_2, SDXL
from frontend.accounting import InferenceClock
from frontend.pipelines.job import GenerationJob
from frontend.pipelines.noise import noise_batch
from frontend.pipelines.pipeline import DiffusionPipeline, PromptEmbeddings, Schedule
from frontend.pipelines.schedulers import EulerDiscrete
from frontend.triton import TritonClient

CROP_TOP_LEFT = (0, 0)
"""`crops_coords_top_left`'s default in both pipelines."""


def initial_latents(
    seeds: list[int], height: int, width: int, channels: int = 4, vae_scale_factor: int = 8
) -> npt.NDArray[np.float32]:
    """The text-to-image initial noise: `initial_noise(seed, (C, H/8, W/8))` per image.

    Pass this as `latents=` to diffusers' StableDiffusionXLPipeline to get the served image: its
    prepare_latents multiplies the given latents by the scheduler's init_noise_sigma, as ours does.
    """
    return noise_batch(seeds, (channels, height // vae_scale_factor, width // vae_scale_factor))


def img2img_start(steps: int, strength: float) -> int:
    """The first step of an image-to-image run: StableDiffusionXLImg2ImgPipeline.get_timesteps
    (denoising_start None) runs the last int(steps * strength) steps of the schedule."""
    return steps - min(int(steps * strength), steps)


def add_time_ids(height: int, width: int) -> npt.NDArray[np.float32]:
    """`_get_add_time_ids` with the pipelines' defaults: original and target size (height, width), no crop.

    The img2img pipeline gives the same six numbers, as its `requires_aesthetics_score` is False
    unless the checkpoint asks for it, which only the refiner (not a StableDiffusionXLPipeline) does.
    """
    return np.array([height, width, *CROP_TOP_LEFT, height, width], dtype=np.float32)


@dataclass(frozen=True, kw_only=True)
class SDXLPipeline(DiffusionPipeline):
    TEXT_ENCODER_OUTPUTS: ClassVar[Mapping[str, tuple[str, ...]]] = {
        CLIP.name: ("prompt_embeds",),
        CLIP_2.name: ("prompt_embeds", "text_embeds"),
    }

    scheduler: EulerDiscrete

    @classmethod
    def from_metadata(cls, name: str, metadata: Mapping[str, Any], triton: TritonClient) -> SDXLPipeline:
        return cls(
            scheduler=EulerDiscrete.from_config(metadata["scheduler"]),
            # StableDiffusionXLPipeline's default, for checkpoints whose model_index.json omits it.
            force_zeros_for_empty_prompt=bool(metadata.get("force_zeros_for_empty_prompt", True)),
            **cls._metadata_fields(name, SDXL, metadata, triton),
        )

    def guidance_scale(self, job: GenerationJob) -> float | None:
        """Classic CFG where `guidance` > 1 (StableDiffusionXLPipeline.do_classifier_free_guidance)."""
        return job.guidance if job.guidance > 1 else None

    img2img_start = staticmethod(img2img_start)

    def schedule(self, job: GenerationJob) -> Schedule:
        return self.scheduler.schedule(job.steps)

    def embeddings(self, outputs: Mapping[str, Mapping[str, npt.NDArray[np.float32]]]) -> PromptEmbeddings:
        """Both encoders' penultimate states side by side, text_encoder_2's pooled projection."""
        first, second = outputs[CLIP.name], outputs[CLIP_2.name]
        prompt_embeds = np.concatenate([first["prompt_embeds"], second["prompt_embeds"]], axis=-1)
        return PromptEmbeddings(prompt_embeds=prompt_embeds, pooled=second["text_embeds"])

    async def conditioning(
        self, job: GenerationJob, embeddings: PromptEmbeddings, clock: InferenceClock
    ) -> dict[str, npt.NDArray[np.float32]]:
        """The prompt and the size micro-conditioning (`add_time_ids`)."""
        return {
            "encoder_hidden_states": embeddings.prompt_embeds,
            "text_embeds": embeddings.pooled,
            "time_ids": np.tile(add_time_ids(job.height, job.width), (len(embeddings.pooled), 1)),
        }

    def step_inputs(
        self, latents: npt.NDArray[np.float32], sigma: np.float32, timestep: np.float32
    ) -> dict[str, npt.NDArray[np.float32]]:
        return {
            "sample": self.scheduler.scale_model_input(latents, sigma),
            "timestep": np.full((len(latents), 1), timestep, dtype=np.float32),
        }
