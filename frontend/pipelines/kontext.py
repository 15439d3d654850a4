"""FLUX.1 Kontext [dev]: FLUX.1-dev's pipeline, its transformer also attending to one input image.

Mirrors diffusers' FluxKontextPipeline (pipeline_flux_kontext.py): the input image, resized to Kontext's
trained resolution nearest its aspect ratio (`Limits.conditioning_sizes`, applied by the API), is
VAE-encoded to its posterior's mean (`sample_mode="argmax"`: no noise), packed as the latents are, and
given to every denoiser call beside the image tokens, with position ids whose first coordinate is 1.
The exported denoiser appends them to the image tokens and predicts the image tokens alone
(export/kontext.py). The image conditions the generation; it starts none, so `strength` is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from families.family import VAE_ENCODER
from families.kontext import KONTEXT
from frontend.accounting import InferenceClock
from frontend.pipelines.flux import FluxPipeline, latent_image_ids, pack_latents
from frontend.pipelines.inpainting import KnownRegion
from frontend.pipelines.job import GenerationJob
from frontend.pipelines.pipeline import PromptEmbeddings
from frontend.pipelines.schedulers import FlowMatchEuler
from frontend.triton import TritonClient


def context_ids(latent_height: int, latent_width: int) -> npt.NDArray[np.float32]:
    """The input image tokens' position ids: the image tokens' with the first coordinate 1, as
    FluxKontextPipeline.prepare_latents sets `image_ids[..., 0] = 1`."""
    ids = latent_image_ids(latent_height, latent_width)
    ids[:, 0] = 1
    return ids


@dataclass(frozen=True, kw_only=True)
class KontextPipeline(FluxPipeline):
    @classmethod
    def from_metadata(cls, name: str, metadata: Mapping[str, Any], triton: TritonClient) -> KontextPipeline:
        return cls(
            scheduler=FlowMatchEuler.from_config(metadata["scheduler"]),
            guidance_embeds=bool(metadata["guidance_embeds"]),
            **cls._metadata_fields(name, KONTEXT, metadata, triton),
        )

    async def prepare_latents(
        self, job: GenerationJob, sigmas: npt.NDArray[np.float32], clock: InferenceClock
    ) -> tuple[int, npt.NDArray[np.float32], KnownRegion | None]:
        """The seeds' noise from the first step: the input image conditions the denoiser (`conditioning`)."""
        return 0, self.noise(job) * self.scheduler.init_noise_sigma(sigmas), None

    async def conditioning(
        self, job: GenerationJob, embeddings: PromptEmbeddings, clock: InferenceClock
    ) -> dict[str, npt.NDArray[np.float32]]:
        """FLUX.1-dev's, and the input image's packed latents and position ids for every row."""
        if job.init_images is None:
            raise ValueError("a Kontext job carries its input image (the API refuses a request without one)")
        inputs = await super().conditioning(job, embeddings, clock)
        encoded = await self.triton.infer(
            self._model(VAE_ENCODER.name), {"image": job.init_images}, ["latent_mean"], clock
        )
        latents = encoded["latent_mean"]
        rows = len(embeddings.pooled)
        ids = context_ids(*latents.shape[2:])
        inputs["context_latents"] = np.repeat(pack_latents(latents), rows, axis=0)
        inputs["context_ids"] = np.ascontiguousarray(np.broadcast_to(ids, (rows, *ids.shape)))
        return inputs
