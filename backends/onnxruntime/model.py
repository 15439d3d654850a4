"""Python-based Triton backend named ``onnxruntime``.

Production serves the model repository with Triton's native ONNX Runtime backend; the embedded
server (no native backend in the nvidia-pytriton wheel) serves the same repository with this shim,
so a config saying ``backend: "onnxruntime"`` or ``platform: "onnxruntime_onnx"`` works in both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# ONNX Runtime type strings -> numpy dtypes, to compare the model with its config.
_ORT_TO_NUMPY: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}

# Requests whose inputs share (name, shape without the batch dimension) can run as one batch.
_GroupKey = tuple[tuple[str, tuple[int, ...]], ...]

MAX_BATCH_ELEMENTS = 1 << 19
"""Most elements of one input that one session call takes; a larger batch from Triton's batcher runs
as several calls. On a CPU, batching pays while a batch fits the caches and costs once it does not:
the FLUX transformer at 1024x1024 (262,144 elements of `hidden_states` a sample) took 131 ms a
sample in batches of 2 and 207 ms in batches of 4, against 150 ms alone; at 256x256 (16,384 a
sample) 2.2 ms a sample in batches of 8, against 3.5 ms alone."""


def session_options(config: dict[str, Any]) -> ort.SessionOptions:
    """ORT's default intra-op threads (one per core; `intra_op_thread_count` overrides), without
    spin-waiting: every model of the repository runs in its own process with its own thread pool, and
    threads spinning in one while another computes would take its cores (benchmarks/peers.py runs
    its loop with the same options)."""
    options = ort.SessionOptions()
    threads = config.get("parameters", {}).get("intra_op_thread_count", {}).get("string_value")
    if threads:
        options.intra_op_num_threads = int(threads)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
"""In order of preference: TensorRT's (fused kernels, where onnxruntime-gpu finds TensorRT's libraries),
then CUDA's. `pip install 'imagegen[gpu]'` brings onnxruntime-gpu, which offers them."""
CPU_PROVIDER = "CPUExecutionProvider"


def execution_providers(available: Sequence[str], parameters: dict[str, Any]) -> list[str]:
    """The providers a session asks for: the GPU ones this ONNX Runtime offers, then the CPU's, which
    runs what they cannot (and everything on a host without a GPU build). A model's config may name its
    own list in the `execution_providers` parameter (comma-separated), e.g. to keep one on the CPU."""
    named = parameters.get("execution_providers", {}).get("string_value")
    wanted = [name.strip() for name in named.split(",")] if named else [*GPU_PROVIDERS, CPU_PROVIDER]
    chosen = [name for name in wanted if name in available]
    return chosen if CPU_PROVIDER in chosen else [*chosen, CPU_PROVIDER]


class TritonPythonModel:
    """Runs one ONNX model with an ONNX Runtime CPU session, batching what Triton's batcher queued."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.onnx"
        path = Path(args["model_repository"]) / args["model_version"] / filename
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model file not found: {path}")
        # Loading from the path (not bytes) lets ORT find external data files next to the model.
        providers = execution_providers(ort.get_available_providers(), config.get("parameters", {}))
        self._session = ort.InferenceSession(str(path), session_options(config), providers=providers)
        # ONNX Runtime drops a provider it cannot start (no GPU, no TensorRT libraries): Triton's log says
        # what runs.
        running = ", ".join(self._session.get_providers())
        pb_utils.Logger.log_info(f"{config['name']} runs on {running} (asked for {', '.join(providers)})")
        self._input_names = [i["name"] for i in config["input"]]
        self._output_names = [o["name"] for o in config["output"]]
        _check_types(config, self._session, path)
        self._batched = config.get("max_batch_size", 0) > 0

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        groups: dict[_GroupKey | int, list[int]] = {}
        for index, request in enumerate(requests):
            # Without batching every request runs alone: its index is its own group.
            key = self._group_key(request) if self._batched else index
            groups.setdefault(key, []).append(index)
        for indices in (chunk for group in groups.values() for chunk in self._chunks(requests, group)):
            batch = [requests[i] for i in indices]
            try:
                results = self._run(batch)
            except Exception as exc:
                # One bad request must not fail its neighbours: retry them one by one.
                results = [self._run_alone(r) for r in batch] if len(batch) > 1 else [_error(exc)]
            for i, response in zip(indices, results, strict=True):
                responses[i] = response
        return responses

    def _chunks(self, requests: list[Any], indices: list[int]) -> list[list[int]]:
        """`indices` (one group) cut into runs of at most MAX_BATCH_ELEMENTS in every input."""
        chunks: list[list[int]] = [[]]
        elements = 0
        for index in indices:
            size = max(int(np.prod(t.shape())) for t in self._inputs(requests[index]))
            if chunks[-1] and elements + size > MAX_BATCH_ELEMENTS:
                chunks.append([])
                elements = 0
            chunks[-1].append(index)
            elements += size
        return chunks

    def _inputs(self, request: Any) -> list[Any]:
        tensors = (pb_utils.get_input_tensor_by_name(request, name) for name in self._input_names)
        return [t for t in tensors if t is not None]

    def _group_key(self, request: Any) -> _GroupKey:
        tensors = ((name, pb_utils.get_input_tensor_by_name(request, name)) for name in self._input_names)
        return tuple((name, tuple(t.shape()[1:])) for name, t in tensors if t is not None)

    def _run_alone(self, request: Any) -> Any:
        try:
            return self._run([request])[0]
        except Exception as exc:
            return _error(exc)

    def _run(self, requests: list[Any]) -> list[Any]:
        """Run requests of identical per-sample shapes as one session call and split the outputs."""
        feeds: dict[str, npt.NDArray[Any]] = {}
        for name in self._input_names:
            arrays = [pb_utils.get_input_tensor_by_name(r, name) for r in requests]
            if arrays[0] is None:
                continue
            parts = [a.as_numpy() for a in arrays]
            joined = np.concatenate(parts) if len(parts) > 1 else parts[0]
            feeds[name] = joined
        names = self._output_names
        values = self._session.run(names, feeds)
        if not self._batched:
            return [self._response(requests[0], dict(zip(names, values, strict=True)))]
        sizes = [pb_utils.get_input_tensor_by_name(r, next(iter(feeds))).shape()[0] for r in requests]
        offsets = np.cumsum(sizes)[:-1]
        split: list[dict[str, npt.NDArray[Any]]] = [{} for _ in requests]
        for name, value in zip(names, values, strict=True):
            if value.shape[0] != sum(sizes):
                raise ValueError(f"output {name!r} has batch {value.shape[0]}, expected {sum(sizes)}")
            for per_request, part in zip(split, np.split(value, offsets), strict=True):
                per_request[name] = part
        return [self._response(r, outputs) for r, outputs in zip(requests, split, strict=True)]

    def _response(self, request: Any, outputs: dict[str, npt.NDArray[Any]]) -> Any:
        wanted = request.requested_output_names() or outputs.keys()
        tensors = [pb_utils.Tensor(name, np.ascontiguousarray(outputs[name])) for name in wanted]
        return pb_utils.InferenceResponse(output_tensors=tensors)


def _error(exc: Exception) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))


def _check_types(config: dict[str, Any], session: ort.InferenceSession, path: Path) -> None:
    """Refuse a config whose tensor names or data types differ from the model's, as the native
    backend does at load: a repository that loads here then loads in production too."""
    model = {t.name: t.type for t in [*session.get_inputs(), *session.get_outputs()]}
    for tensor in [*config["input"], *config["output"]]:
        name, data_type = tensor["name"], tensor["data_type"]
        if name not in model:
            raise ValueError(f"{name!r} is not an input or output of {path}")
        expected = _ORT_TO_NUMPY.get(model[name])
        if expected is None or np.dtype(pb_utils.triton_string_to_numpy(data_type)) != np.dtype(expected):
            raise ValueError(f"{name!r} is {data_type} in the config but {model[name]} in {path}")
