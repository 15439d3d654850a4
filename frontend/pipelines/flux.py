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

from frontend.pipelines.job import Generation, GenerationJob, Limits
from frontend.pipelines.noise import initial_noise
from frontend.pipelines.schedulers import FlowMatchEuler
from frontend.triton import InferenceClock, TritonClient

FAMILY = "flux"
DENOISER = "transformer"
PACKING = 2
"""FLUX packs 2x2 latent pixels into one token, so sides are multiples of vae_scale_factor * 2."""

SIZES = ("1024x1024", "1792x1024", "1024x1792", "1536x1024", "1024x1536", "768x768", "512x512", "256x256")


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
    shape = (channels, height // vae_scale_factor, width // vae_scale_factor)
    return pack_latents(np.stack([initial_noise(seed, shape) for seed in seeds]))


def latent_image_ids(latent_height: int, latent_width: int) -> np.ndarray:
    """Position ids (0, row, column) of each packed token, as FluxPipeline._prepare_latent_image_ids."""
    rows, cols = np.meshgrid(np.arange(latent_height // 2), np.arange(latent_width // 2), indexing="ij")
    ids = np.stack([np.zeros_like(rows), rows, cols], axis=-1).astype(np.float32)
    return ids.reshape(-1, 3)


@dataclass(frozen=True)
class FluxPipeline:
    name: str
    triton: TritonClient
    scheduler: FlowMatchEuler
    latent_channels: int
    vae_scale_factor: int
    guidance_embeds: bool
    text_encoders: Mapping[str, int]
    limits: Limits

    @classmethod
    def from_metadata(cls, name: str, metadata: Mapping[str, Any], triton: TritonClient) -> FluxPipeline:
        return cls(
            name=name,
            triton=triton,
            scheduler=FlowMatchEuler.from_config(metadata["scheduler"]),
            latent_channels=int(metadata["latent_channels"]),
            vae_scale_factor=int(metadata["vae_scale_factor"]),
            guidance_embeds=bool(metadata["guidance_embeds"]),
            text_encoders=dict(metadata["text_encoders"]),
            limits=Limits(
                sizes=SIZES,
                default_size="1024x1024",
                min_side=128,
                max_side=2048,
                side_multiple=int(metadata["vae_scale_factor"]) * PACKING,
                default_steps=int(metadata["default_steps"]),
                max_steps=100,
                default_guidance=float(metadata["default_guidance"]),
                max_guidance=20.0,
                parameters=frozenset(
                    {"steps", "width", "height", *(["guidance"] if metadata["guidance_embeds"] else [])}
                ),
            ),
        )

    def _model(self, component: str) -> str:
        return f"{self.name}_{component}"

    async def generate(self, job: GenerationJob) -> Generation:
        clock = InferenceClock()
        pooled, prompt_embeds = await self.encode_prompt(job.prompt, clock)
        n = len(job.seeds)
        latents = initial_latents(job.seeds, job.height, job.width, self.latent_channels, self.vae_scale_factor)
        latents = await self.denoise(
            latents, np.repeat(pooled, n, axis=0), np.repeat(prompt_embeds, n, axis=0), job, clock
        )
        images = await self.decode_latents(latents, job.height, job.width, clock)
        return Generation(images=images, compute_seconds=clock.seconds)

    async def encode_prompt(self, prompt: str, clock: InferenceClock) -> tuple[np.ndarray, np.ndarray]:
        """(CLIP pooled embedding, T5 hidden states), each with a batch of one."""
        ids = await self.triton.infer(
            self._model("tokenizer"),
            {"prompt": np.array([[prompt.encode()]], dtype=np.object_)},
            [f"{encoder}_input_ids" for encoder in self.text_encoders],
            clock,
        )
        clip, t5 = await asyncio.gather(
            self.triton.infer(
                self._model("text_encoder"), {"input_ids": ids["text_encoder_input_ids"]}, ["pooled_embeds"], clock
            ),
            self.triton.infer(
                self._model("text_encoder_2"), {"input_ids": ids["text_encoder_2_input_ids"]}, ["prompt_embeds"], clock
            ),
        )
        return clip["pooled_embeds"], t5["prompt_embeds"]

    async def denoise(
        self,
        latents: np.ndarray,
        pooled: np.ndarray,
        prompt_embeds: np.ndarray,
        job: GenerationJob,
        clock: InferenceClock,
    ) -> np.ndarray:
        n, image_tokens, _ = latents.shape
        sigmas, timesteps = self.scheduler.schedule(job.steps, image_tokens)
        ids = latent_image_ids(job.height // self.vae_scale_factor, job.width // self.vae_scale_factor)
        inputs = {
            "encoder_hidden_states": prompt_embeds,
            "pooled_projections": pooled,
            "img_ids": np.ascontiguousarray(np.broadcast_to(ids, (n, *ids.shape))),
        }
        if self.guidance_embeds:
            inputs["guidance"] = np.full((n, 1), job.guidance, dtype=np.float32)
        for index, timestep in enumerate(timesteps):
            # FluxPipeline passes timestep / 1000; the transformer scales it back inside.
            inputs["timestep"] = np.full((n, 1), timestep / np.float32(1000), dtype=np.float32)
            inputs["hidden_states"] = latents
            result = await self.triton.infer(self._model(DENOISER), inputs, ["noise_pred"], clock)
            latents = self.scheduler.step(latents, result["noise_pred"], sigmas[index], sigmas[index + 1])
        return latents

    async def decode_latents(
        self, latents: np.ndarray, height: int, width: int, clock: InferenceClock
    ) -> list[np.ndarray]:
        unpacked = unpack_latents(latents, height // self.vae_scale_factor, width // self.vae_scale_factor)
        result = await self.triton.infer(self._model("vae_decoder"), {"latent": unpacked}, ["image"], clock)
        # diffusers' numpy_to_pil: (image * 255).round() on [0, 1] floats.
        pixels = (result["image"] * 255).round().astype(np.uint8)
        return list(pixels.transpose(0, 2, 3, 1))
