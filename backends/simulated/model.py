"""Python-based Triton backend named ``simulated``: a GPU that costs time and no compute.

`imagegen export --simulate COSTS.json` (export/simulate.py) writes a family's real tensor contracts
with this backend and, in each version folder, ``simulation.json``: the component's role and what one
call of 1, 2, ... max_batch_size samples takes on the GPU the cost file measured. Handed a batch of B
samples (every request Triton's batcher queued together), it takes the GPU, and gives it back B's time
later, sleeping whatever its own work left (a sleep frees the CPU, as a GPU computing does), with outputs of
the contract's shapes that cost little and keep a pipeline's numbers sane: a denoiser's prediction is a
scaled copy of its latents, the VAE decoder's pixels are its latents' first channels, blown up.

The GPU is one: every model of the repository runs in its own stub process, and a lock on the
repository's folder (flock) lets one of them compute at a time, as one GPU runs one model's kernels
at a time, so a VAE decode delays the steps queued behind it as it would on the card.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils

PREDICTION_SCALE = 0.5
"""The denoiser's prediction, a multiple of its latents: each step shrinks them a little (flow matching
and Euler alike), so any number of steps stays finite."""
STD = 0.01
"""The VAE encoder's posterior spread."""

Arrays = dict[str, npt.NDArray[Any]]


class TritonPythonModel:
    """Sleeps the simulated GPU's time for each batch and answers every request in it."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        simulation = json.loads(
            (Path(args["model_repository"]) / args["model_version"] / "simulation.json").read_text()
        )
        self._seconds_by_batch = [ms / 1000 for ms in simulation["ms_by_batch"]]
        self._scale_factor = int(simulation["vae_scale_factor"])
        self._inputs = [tensor["name"] for tensor in config["input"]]
        self._outputs = {
            tensor["name"]: (pb_utils.triton_string_to_numpy(tensor["data_type"]), tensor["dims"])
            for tensor in config["output"]
        }
        self._respond: Callable[[Arrays], Arrays] = getattr(self, f"_{simulation['role']}")
        self._gpu = os.open(Path(args["model_repository"]).parent, os.O_RDONLY)

    def finalize(self) -> None:
        os.close(self._gpu)

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [self._arrays(request) for request in requests]
        samples = sum(len(next(iter(inputs.values()))) for inputs in arrays)
        if samples > len(self._seconds_by_batch):
            error = pb_utils.TritonError(f"a batch of {samples} is past the cost table's {len(self._seconds_by_batch)}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        fcntl.flock(self._gpu, fcntl.LOCK_EX)
        try:
            started = time.perf_counter()
            responses = [self._response(request, inputs) for request, inputs in zip(requests, arrays, strict=True)]
            time.sleep(max(0.0, started + self._seconds_by_batch[samples - 1] - time.perf_counter()))
        finally:
            fcntl.flock(self._gpu, fcntl.LOCK_UN)
        return responses

    def _arrays(self, request: Any) -> Arrays:
        tensors = ((name, pb_utils.get_input_tensor_by_name(request, name)) for name in self._inputs)
        return {name: tensor.as_numpy() for name, tensor in tensors if tensor is not None}

    def _response(self, request: Any, inputs: Arrays) -> Any:
        outputs = self._respond(inputs)
        wanted = request.requested_output_names() or outputs.keys()
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, outputs[name]) for name in wanted])

    def _text_encoder(self, inputs: Arrays) -> Arrays:
        """Zeros of each output's shape, its token axis the prompt's."""
        batch, tokens = inputs["input_ids"].shape
        return {
            name: np.zeros((batch, *(tokens if d == -1 else d for d in dims)), dtype)
            for name, (dtype, dims) in self._outputs.items()
        }

    def _denoiser(self, inputs: Arrays) -> Arrays:
        """The latents (the first input, shaped as the prediction), scaled."""
        (name, (dtype, _)), latents = next(iter(self._outputs.items())), inputs[self._inputs[0]]
        return {name: (latents * PREDICTION_SCALE).astype(dtype)}

    def _vae_decoder(self, inputs: Arrays) -> Arrays:
        """(B, H, W, 3) uint8: the latents' first three channels around grey, each cell a square of pixels."""
        latent = inputs["latent"]
        cells = np.clip(128 + 64 * latent[:, :3].transpose(0, 2, 3, 1), 0, 255).astype(np.uint8)
        factor = self._scale_factor
        return {"image": np.ascontiguousarray(cells.repeat(factor, axis=1).repeat(factor, axis=2))}

    def _vae_encoder(self, inputs: Arrays) -> Arrays:
        """The image's corner pixel of every cell, its channels repeated to the latents'."""
        image = inputs["image"]
        _, (channels, *_) = self._outputs["latent_mean"]
        small = image[:, :, :: self._scale_factor, :: self._scale_factor] * 2 - 1
        mean = np.ascontiguousarray(small[:, np.arange(channels) % small.shape[1]], dtype=np.float32)
        return {"latent_mean": mean, "latent_std": np.full_like(mean, STD)}
