"""LoRA adapters: registering a diffusers/PEFT .safetensors file, and turning a request's adapters
into the exported denoiser's per-sample `lora_down` / `lora_up` inputs (export/lora.py).

An adapter of rank r adapts layer i by `W x + s * B (A x)` with A (r, in), B (out, r) and
s = lora_scale * lora_alpha / r, as diffusers' `load_lora_weights` + `set_adapters` apply it. A
request's adapters are concatenated along the rank into the denoiser's budget R: A into rows of
`down` (R, in), s * B into columns of `up` (out, R); the rest stays zero, which adds exactly nothing.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import json
import re
import shutil
import struct
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from frontend.errors import AdapterNotFound, AdapterOfAnotherModel, InvalidParameter
from frontend.pipelines.job import GenerationJob, LoraFactors
from frontend.store import Store
from frontend.store.adapters import LoraAdapter

LORA_PARAMETERS = frozenset({"lora_weights", "lora_scale"})
"""The request parameters of a pipeline whose denoiser was exported with LoRA branches."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CACHED_ADAPTERS = 64
"""Parsed adapters kept in memory, by file hash (a real FLUX rank-16 adapter is about 100 MB in float32)."""
SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit


class AdapterRefused(ValueError):
    """A file `imagegen lora add` will not register: the message says why."""


@dataclass(frozen=True)
class LoraLayout:
    """The exported denoiser's LoRA layers (the pipeline metadata's `lora`) and where each one's
    factors lie in the flat inputs."""

    denoiser: str  # "transformer" or "unet": the prefix of its tensors in diffusers' LoRA files
    rank: int
    layers: Mapping[str, tuple[int, int, int, int]]  # name -> (in, out, offset in down, offset in up)
    down_size: int
    up_size: int

    @classmethod
    def from_metadata(cls, lora: Mapping[str, Any]) -> LoraLayout:
        rank, layers, down_at, up_at = int(lora["rank"]), {}, 0, 0
        for name, in_features, out_features in lora["layers"]:
            layers[name] = (in_features, out_features, down_at, up_at)
            down_at, up_at = down_at + rank * in_features, up_at + out_features * rank
        return cls(str(lora["denoiser"]), rank, layers, down_at, up_at)


@dataclass(frozen=True)
class AdapterFactors:
    """One adapter's factors per layer: A (r, in) and B (out, r) times lora_alpha / r."""

    rank: int
    layers: Mapping[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]


def denoiser_inputs(
    layout: LoraLayout | None, factors: LoraFactors | None, rows: int
) -> dict[str, npt.NDArray[np.float32]]:
    """The denoiser's LoRA inputs for a batch of `rows` (zeros without adapters); none where the
    denoiser was exported without branches."""
    if layout is None:
        return {}
    if factors is None:
        return {
            "lora_down": np.zeros((rows, layout.down_size), np.float32),
            "lora_up": np.zeros((rows, layout.up_size), np.float32),
        }
    return {
        "lora_down": np.ascontiguousarray(np.broadcast_to(factors.down, (rows, layout.down_size))),
        "lora_up": np.ascontiguousarray(np.broadcast_to(factors.up, (rows, layout.up_size))),
    }


def read_safetensors(data: bytes) -> tuple[dict[str, npt.NDArray[np.float32]], dict[str, str]]:
    """Tensors (as float32) and metadata of a .safetensors file, read with numpy alone."""
    if len(data) < 8:
        raise AdapterRefused("not a safetensors file: shorter than its 8-byte header length")
    (header_size,) = struct.unpack("<Q", data[:8])
    if header_size > min(MAX_HEADER_BYTES, len(data) - 8):
        raise AdapterRefused("not a safetensors file: its header length runs past the end of the file")
    try:
        header = json.loads(data[8 : 8 + header_size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AdapterRefused("not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise AdapterRefused("not a safetensors file: its header is not a JSON object")
    body = memoryview(data)[8 + header_size :]
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, entry in header.items():
        try:
            dtype, shape, (start, end) = SAFETENSORS_DTYPES[entry["dtype"]], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise AdapterRefused(f"tensor {name!r}: unsupported dtype or malformed entry {entry!r}") from None
        if not 0 <= start <= end <= len(body) or (end - start) != int(np.prod(shape)) * np.dtype(dtype).itemsize:
            raise AdapterRefused(f"tensor {name!r}: its data offsets do not match its shape (a truncated file?)")
        array = np.frombuffer(body[start:end], dtype=dtype).reshape(shape)
        if entry["dtype"] == "BF16":  # bfloat16 is the high half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = array.astype(np.float32)
    return tensors, metadata


def parse_adapter(data: bytes, layout: LoraLayout) -> AdapterFactors:
    """An adapter's factors, checked against the exported layers (diffusers/PEFT naming:
    `<denoiser>.<layer>.lora_A.weight`, `...lora_B.weight`, alpha from the file's adapter metadata)."""
    tensors, metadata = read_safetensors(data)
    denoiser = layout.denoiser
    config = _adapter_config(metadata, denoiser)
    if config.get("use_dora") or config.get("use_rslora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise AdapterRefused("DoRA, rsLoRA and per-layer rank or alpha patterns are not supported")
    prefix = f"{denoiser}."
    pairs: dict[str, dict[str, npt.NDArray[np.float32]]] = {}
    for key, tensor in tensors.items():
        match = re.fullmatch(r"(.+)\.(lora_A|lora_B)\.weight", key)
        if match is None:
            raise AdapterRefused(
                f"unexpected tensor {key!r}: expected diffusers/PEFT names ending .lora_A/.lora_B.weight"
            )
        if not key.startswith(prefix):
            raise AdapterRefused(
                f"tensor {key!r} adapts no part of this model's {denoiser} (an adapter of another model?)"
            )
        pairs.setdefault(match.group(1).removeprefix(prefix), {})[match.group(2)] = tensor
    if not pairs:
        raise AdapterRefused("the file holds no LoRA tensors")
    layers = {}
    rank = 0
    for layer, factors in sorted(pairs.items()):
        if layer not in layout.layers:
            raise AdapterRefused(
                f"it adapts {layer!r}, which is not among the exported LoRA layers (attention projections)"
            )
        if set(factors) != {"lora_A", "lora_B"}:
            raise AdapterRefused(f"layer {layer!r} lacks its lora_A or lora_B")
        down, up = factors["lora_A"], factors["lora_B"]
        in_features, out_features, _, _ = layout.layers[layer]
        r = down.shape[0]
        if down.shape != (r, in_features) or up.shape != (out_features, r):
            raise AdapterRefused(
                f"layer {layer!r}: factors {down.shape} and {up.shape} do not fit its {in_features} -> "
                f"{out_features} weight (an adapter of another model?)"
            )
        # PEFT's scaling lora_alpha / r; diffusers reads alpha = r when the file stores no alpha.
        layers[layer] = (down, up * np.float32(float(config.get("lora_alpha", r)) / r))
        rank = max(rank, r)
    if rank > layout.rank:
        raise AdapterRefused(f"its rank {rank} is over the denoiser's LoRA rank budget of {layout.rank}")
    return AdapterFactors(rank, layers)


def _adapter_config(metadata: Mapping[str, str], denoiser: str) -> dict[str, Any]:
    """The denoiser's LoraConfig fields that diffusers' save_lora_weights stores in the file, if any."""
    raw = metadata.get("lora_adapter_metadata")
    if raw is None:
        return {}
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError:
        raise AdapterRefused("its lora_adapter_metadata is not JSON") from None
    if not isinstance(entries, dict):
        raise AdapterRefused("its lora_adapter_metadata is not a JSON object")
    prefix = f"{denoiser}."
    return {key.removeprefix(prefix): value for key, value in entries.items() if key.startswith(prefix)}


def pack(adapters: Sequence[tuple[AdapterFactors, float]], layout: LoraLayout) -> LoraFactors:
    """Adapters with their scales, side by side along the rank budget."""
    down = np.zeros(layout.down_size, np.float32)
    up = np.zeros(layout.up_size, np.float32)
    column = 0
    for factors, scale in adapters:
        for name, (a, b) in factors.layers.items():
            in_features, out_features, down_at, up_at = layout.layers[name]
            r = a.shape[0]
            down[down_at : down_at + layout.rank * in_features].reshape(layout.rank, in_features)[
                column : column + r
            ] = a
            up[up_at : up_at + out_features * layout.rank].reshape(out_features, layout.rank)[
                :, column : column + r
            ] = b * np.float32(scale)
        column += factors.rank
    return LoraFactors(down, up)


def pipeline_metadata(repository: Path, model: str) -> dict[str, Any]:
    """The pipeline metadata the exporter wrote into `model`'s denoiser config in a model repository."""
    for config in sorted(repository.glob(f"{model}_*/config.pbtxt")):
        found = re.search(
            r'key: "imagegen\.pipeline"\s*value\s*\{\s*string_value: "((?:[^"\\]|\\.)*)"', config.read_text()
        )
        if found:
            return dict(json.loads(codecs.escape_decode(found.group(1).encode())[0].decode()))
    raise ValueError(f"{repository} holds no pipeline {model!r}")


async def register(
    store: Store, folder: Path, name: str, model: str, file: Path, metadata: Mapping[str, Any]
) -> LoraAdapter:
    """Check `file` against `model`'s exported denoiser, keep a copy by content hash, record it."""
    if not NAME.fullmatch(name):
        raise ValueError(
            f"an adapter name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit: {name!r}"
        )
    if "lora" not in metadata:
        raise ValueError(f"the model {model!r} was exported without LoRA branches (imagegen export --lora-rank)")
    data = file.read_bytes()
    try:
        factors = parse_adapter(data, LoraLayout.from_metadata(metadata["lora"]))
    except AdapterRefused as exc:
        raise ValueError(f"{file} is refused: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / f"{digest}.safetensors"
    if not kept.exists():
        shutil.copyfile(file, kept.with_suffix(".partial"))
        kept.with_suffix(".partial").replace(kept)
    adapter = LoraAdapter(name, model, digest, factors.rank, len(factors.layers), time.time())
    await store.adapters.add(adapter)
    return adapter


class Adapters:
    """The registered adapters as requests use them: the store is read per request (so `imagegen lora
    add|remove` needs no restart), each file parsed once per content hash and kept in memory."""

    def __init__(self, store: Store, folder: Path) -> None:
        self.store = store
        self.folder = folder
        self._parsed: OrderedDict[str, AdapterFactors] = OrderedDict()

    async def attach(self, job: GenerationJob, pipeline: str, layout: LoraLayout | None) -> GenerationJob:
        """`job` with its adapters' packed factors: a request in flight keeps them even if an
        adapter is removed meanwhile."""
        if not job.adapters or layout is None:
            return job
        names = [name for name, _ in job.adapters]
        found = {adapter.name: adapter for adapter in await self.store.adapters.find(names)}
        for name in names:
            if name not in found:
                raise AdapterNotFound(
                    f"There is no LoRA adapter `{name}`; GET /v1/models lists them.", param="lora_weights"
                )
            if found[name].model != pipeline:
                raise AdapterOfAnotherModel(
                    f"The LoRA adapter `{name}` adapts `{found[name].model}`, not `{pipeline}`.", param="lora_weights"
                )
        if sum(found[name].rank for name in names) > layout.rank:
            raise InvalidParameter(
                f"The adapters' ranks add up to more than this model's LoRA rank budget of {layout.rank}.",
                param="lora_weights",
            )
        parsed = [(await self._factors(found[name], layout), scale) for name, scale in job.adapters]
        return replace(job, lora=await asyncio.to_thread(pack, parsed, layout))

    async def _factors(self, adapter: LoraAdapter, layout: LoraLayout) -> AdapterFactors:
        key = f"{adapter.model}/{adapter.sha256}"
        if key not in self._parsed:
            try:
                data = await asyncio.to_thread((self.folder / f"{adapter.sha256}.safetensors").read_bytes)
            except FileNotFoundError:  # removed since the store was read
                raise AdapterNotFound(f"The LoRA adapter `{adapter.name}` was removed.", param="lora_weights") from None
            self._parsed[key] = await asyncio.to_thread(parse_adapter, data, layout)
            while len(self._parsed) > CACHED_ADAPTERS:
                self._parsed.popitem(last=False)
        self._parsed.move_to_end(key)
        return self._parsed[key]
