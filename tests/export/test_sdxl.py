"""The exported SDXL models compute what diffusers' SDXL pipelines compute from the same checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from tokenizers import Tokenizer

PROMPT = "a watercolor of a sailing ship at sunset"


def run(model_repository: Path, component: str, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    path = model_repository / f"sdxl_{component}" / "1" / "model.onnx"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def test_text_encoders_give_diffusers_prompt_embeddings(model_repository: Path, sdxl_diffusers_pipeline: Any) -> None:
    """The exported tokenizers' ids (tokenizer_2 pads with "!", as SDXL's) through both exported encoders give
    encode_prompt's embeddings: penultimate hidden states side by side, and text_encoder_2's pooled projection."""
    ids = {
        encoder: np.array(
            [
                Tokenizer.from_file(str(model_repository / "sdxl_tokenizer" / "1" / encoder / "tokenizer.json"))
                .encode(PROMPT)
                .ids
            ]
        )
        for encoder in ("text_encoder", "text_encoder_2")
    }
    (first,) = run(model_repository, "text_encoder", {"input_ids": ids["text_encoder"]})
    second, pooled = run(model_repository, "text_encoder_2", {"input_ids": ids["text_encoder_2"]})
    with torch.no_grad():
        expected, _, expected_pooled, _ = sdxl_diffusers_pipeline.encode_prompt(
            PROMPT, do_classifier_free_guidance=False
        )
    np.testing.assert_allclose(np.concatenate([first, second], axis=-1), expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(pooled, expected_pooled.numpy(), atol=1e-5)


def test_vae_encoder_gives_diffusers_posterior_in_latent_space(
    model_repository: Path, sdxl_diffusers_pipeline: Any
) -> None:
    """StableDiffusionXLImg2ImgPipeline samples `scaling_factor * latent_dist.sample()`: the exported encoder
    gives latent_dist's mean and std times scaling_factor, from RGB in [0, 1] where diffusers takes [-1, 1]."""
    image = np.random.default_rng(0).random((2, 3, 64, 96), dtype=np.float32)
    mean, std = run(model_repository, "vae_encoder", {"image": image})
    vae = sdxl_diffusers_pipeline.vae
    with torch.no_grad():
        posterior = vae.encode(torch.from_numpy(image) * 2 - 1).latent_dist
    np.testing.assert_allclose(mean, posterior.mean.numpy() * vae.config.scaling_factor, atol=1e-5)
    np.testing.assert_allclose(std, posterior.std.numpy() * vae.config.scaling_factor, atol=1e-6)
