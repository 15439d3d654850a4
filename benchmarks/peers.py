"""The server's in-process peers: what one process makes of the same weights without any server.

(a) `DiffusersPeer`: diffusers' `FluxPipeline` on torch's CPU, loading the checkpoint folder.
(b) `OrtPeer`: a plain ONNX Runtime loop over the very files the server serves from the model
    repository (tokenizer.json files, both text encoders, the transformer, the VAE decoder), with the
    frontend's own scheduler and latent math: the floor for this stack, no HTTP, no Triton, no queues.

Both take the served image's initial latents (`frontend.pipelines.flux.initial_latents`), so all
three make the same image for the same seed, and both return uint8 (H, W, 3) arrays, unencoded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from google.protobuf import text_format
from tokenizers import Tokenizer
from tritonclient.grpc import model_config_pb2 as pb

from families.family import TOKENIZER, VAE_DECODER
from families.flux import CLIP, T5, TRANSFORMER
from families.triton_models import PIPELINE_PARAMETER, model_name
from frontend.pipelines.flux import PACKING, initial_latents, latent_image_ids, unpack_latents
from frontend.pipelines.schedulers import FlowMatchEuler

VERSION = "1"


def session_options() -> ort.SessionOptions:
    """The options the Triton shim gives every session (backends/onnxruntime/model.py), so the two
    compare like for like: ORT's default intra-op threads (one per core), no spin-waiting."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OrtPeer:
    """Peer (b): one FLUX pipeline of a model repository, run by ONNX Runtime in this process."""

    def __init__(self, repository: Path, name: str) -> None:
        self.repository, self.name = repository, name
        config = text_format.Parse((self._folder(TRANSFORMER.name) / "config.pbtxt").read_text(), pb.ModelConfig())
        metadata = json.loads(config.parameters[PIPELINE_PARAMETER].string_value)
        self.scheduler = FlowMatchEuler.from_config(metadata["scheduler"])
        self.vae_scale_factor = int(metadata["vae_scale_factor"])
        self.t5_length = int(metadata["text_encoders"][T5.name])
        """T5's prompt length (256 for schnell), diffusers' `max_sequence_length` for the same image."""
        self.tokenizers = {
            encoder: Tokenizer.from_file(str(self._folder(TOKENIZER.name) / VERSION / encoder / "tokenizer.json"))
            for encoder in metadata["text_encoders"]
        }
        self.sessions = {
            component: self._session(component)
            for component in (CLIP.name, T5.name, TRANSFORMER.name, VAE_DECODER.name)
        }

    def _folder(self, component: str) -> Path:
        return self.repository / model_name(self.name, component)

    def _session(self, component: str) -> ort.InferenceSession:
        path = self._folder(component) / VERSION / "model.onnx"
        return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])

    def generate(self, prompt: str, seed: int, width: int, height: int, steps: int) -> npt.NDArray[np.uint8]:
        ids = {encoder: np.array([t.encode(prompt).ids], dtype=np.int64) for encoder, t in self.tokenizers.items()}
        (pooled,) = self.sessions[CLIP.name].run(["pooled_embeds"], {"input_ids": ids[CLIP.name]})
        (prompt_embeds,) = self.sessions[T5.name].run(["prompt_embeds"], {"input_ids": ids[T5.name]})
        latent_height, latent_width = height // self.vae_scale_factor, width // self.vae_scale_factor
        latents = initial_latents([seed], height, width)
        sigmas, timesteps = self.scheduler.schedule(steps, (latent_height // PACKING) * (latent_width // PACKING))
        feeds = {
            "hidden_states": latents,
            "encoder_hidden_states": prompt_embeds,
            "pooled_projections": pooled,
            "img_ids": latent_image_ids(latent_height, latent_width)[None],
        }
        feeds |= self._neutral_inputs(feeds)
        for index, timestep in enumerate(timesteps):
            feeds["hidden_states"] = latents
            feeds["timestep"] = np.full((1, 1), timestep / np.float32(1000), dtype=np.float32)
            (noise_pred,) = self.sessions[TRANSFORMER.name].run(["noise_pred"], feeds)
            latents = self.scheduler.step(latents, noise_pred, sigmas[index], sigmas[index + 1])
        latent = unpack_latents(latents, latent_height, latent_width)
        (images,) = self.sessions[VAE_DECODER.name].run(["image"], {"latent": latent})
        image: npt.NDArray[np.uint8] = images[0]  # ONNX Runtime's outputs are untyped
        return image

    def _neutral_inputs(self, feeds: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[np.float32]]:
        """Zeros, one row, for the transformer's optional inputs the loop does not set (LoRA factors:
        zeros are no adapter), as the server sends for a request without them."""
        declared = self.sessions[TRANSFORMER.name].get_inputs()
        return {
            i.name: np.zeros((1, *i.shape[1:]), dtype=np.float32)
            for i in declared
            if i.name not in feeds and i.name != "timestep" and all(isinstance(d, int) for d in i.shape[1:])
        }


class DiffusersPeer:
    """Peer (a): diffusers' FluxPipeline, float32 on torch's CPU, with torch's default threads."""

    def __init__(self, checkpoint: Path, max_sequence_length: int) -> None:
        from diffusers import FluxPipeline

        self.pipeline: Any = FluxPipeline.from_pretrained(checkpoint)
        self.pipeline.set_progress_bar_config(disable=True)
        self.max_sequence_length = max_sequence_length

    def generate(self, prompt: str, seed: int, width: int, height: int, steps: int) -> npt.NDArray[np.uint8]:
        import torch

        latents = torch.from_numpy(initial_latents([seed], height, width))
        with torch.inference_mode():
            images = self.pipeline(
                prompt,
                width=width,
                height=height,
                num_inference_steps=steps,
                guidance_scale=0.0,
                latents=latents,
                max_sequence_length=self.max_sequence_length,
                output_type="np",
            ).images
        image: npt.NDArray[np.uint8] = (images[0] * 255).round().astype(np.uint8)
        return image
