"""Python-based Triton backend named ``tokenizer``.

A pipeline's tokenizers travel inside the model repository (``<version>/<encoder>/tokenizer.json``,
padding and truncation already configured by the exporter), so the frontend needs no checkpoint
files: it sends the prompt and gets one ``<encoder>_input_ids`` INT64 tensor per text encoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

TRUNCATED = "prompt_truncated"
"""Output: whether any encoder's tokenizer cut the prompt at its limit (its overflow is dropped)."""


class TritonPythonModel:
    """Tokenizes a batch of prompts with every tokenizer the config's ``encoders`` parameter names."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        encoders = json.loads(config["parameters"]["encoders"]["string_value"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self._tokenizers = {f"{name}_input_ids": _load(version_dir / name / "tokenizer.json") for name in encoders}
        configured = {o["name"] for o in config["output"]}
        if configured != {*self._tokenizers, TRUNCATED}:
            raise ValueError(f"config outputs {sorted(configured)} do not match encoders {encoders}")

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._tokenize(request))
            except Exception as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")))
        return responses

    def _tokenize(self, request: Any) -> Any:
        # TYPE_STRING dims [1] with batching: an object array of bytes shaped (batch, 1).
        raw = pb_utils.get_input_tensor_by_name(request, "prompt").as_numpy().reshape(-1)
        prompts = [p.decode("utf-8") if isinstance(p, bytes) else str(p) for p in raw]
        wanted = set(request.requested_output_names() or [*self._tokenizers, TRUNCATED])
        tensors = []
        truncated = np.zeros((len(prompts), 1), dtype=np.bool_)
        for name, tokenizer in self._tokenizers.items():
            encodings = tokenizer.encode_batch(prompts)
            if len({len(e.ids) for e in encodings}) > 1:
                raise ValueError(f"{name}: tokenizer.json must pad to a fixed length")
            truncated[:, 0] |= [bool(e.overflowing) for e in encodings]
            if name in wanted:
                tensors.append(pb_utils.Tensor(name, np.array([e.ids for e in encodings], dtype=np.int64)))
        if TRUNCATED in wanted:
            tensors.append(pb_utils.Tensor(TRUNCATED, truncated))
        return pb_utils.InferenceResponse(output_tensors=tensors)


def _load(path: Path) -> Tokenizer:
    if not path.is_file():  # tokenizers' own error does not name the file
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    return Tokenizer.from_file(str(path))
