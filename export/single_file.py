"""`--checkpoint` as one `.safetensors` file in the original layout, as most fine-tunes ship.

SDXL fine-tunes hold the UNet, both text encoders and the VAE in Stability's SGM layout
(`model.diffusion_model.*`, `conditioner.embedders.0/1.*`, `first_stage_model.*`); FLUX.1 files hold
Black Forest Labs' transformer alone (`double_blocks.*`, `single_blocks.*`, `img_in`, ...). Neither
carries configs, tokenizers or a scheduler: `--config` names the diffusers folder (or Hub id) that
supplies them, and the components the file lacks. Weights are converted by diffusers' own single-file
loaders (`load_single_file_sub_model`, what `DiffusionPipeline.from_single_file` calls per component),
offline, one component at a time, reading only that component's tensors from the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.single_file import load_single_file_sub_model
from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers
from safetensors import safe_open

from export.hub import resolve_checkpoint


@dataclass(frozen=True)
class Layout:
    """An original single-file layout: the key that tells it apart (diffusers' CHECKPOINT_KEY_NAMES
    uses the same ones), the diffusers pipelines whose folders can configure it, and per component
    (checkpoint subfolder) the prefix of its tensors' keys in the file."""

    name: str
    marker: str
    pipelines: tuple[str, ...]
    prefixes: Mapping[str, str]


LAYOUTS = (
    Layout(
        "SDXL (Stability's original layout)",
        "conditioner.embedders.1.model.positional_embedding",
        ("StableDiffusionXLPipeline",),
        {
            "unet": "model.diffusion_model.",
            "text_encoder": "conditioner.embedders.0.",
            "text_encoder_2": "conditioner.embedders.1.",
            "vae": "first_stage_model.",
        },
    ),
    Layout(
        "FLUX.1 (Black Forest Labs' original layout)",
        "double_blocks.0.img_attn.norm.key_norm.scale",
        ("FluxPipeline", "FluxKontextPipeline"),
        {"transformer": ""},
    ),
)
PUBLISHED_FLUX_WIDTH = 3072
"""The width diffusers 0.42.1 assumes when it splits a FLUX single block's fused `linear1`
(`inner_dim = 3072` in convert_flux_transformer_checkpoint_to_diffusers)."""


@dataclass(frozen=True)
class SingleFile:
    path: Path
    layout: Layout
    config: Path
    """The diffusers folder: configs, tokenizers, scheduler, and the components the file lacks."""

    def holds(self, subfolder: str) -> bool:
        return subfolder in self.layout.prefixes

    def load(self, model_class: type[Any], subfolder: str, dtype: torch.dtype) -> Any:
        """The component in `dtype`, its weights converted from the file's layout by diffusers."""
        state = self.read(self.layout.prefixes[subfolder])
        if subfolder == "transformer":
            state = flux_to_diffusers(state)
        return load_single_file_sub_model(
            library_name=model_class.__module__.split(".")[0],
            class_name=model_class.__name__,
            name=subfolder,
            checkpoint=state,
            pipelines=None,
            is_pipeline_module=False,
            cached_model_config_path=str(self.config),
            local_files_only=True,
            torch_dtype=dtype,
        )

    def read(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under `prefix`, and the layout's marker, by which diffusers also tells SDXL's
        CLIP-L apart: an SDXL file's other components stay on disk."""
        with safe_open(self.path, framework="pt") as file:
            keys = [key for key in file.keys() if key.startswith(prefix) or key == self.layout.marker]  # noqa: SIM118
            return {key: file.get_tensor(key) for key in keys}


def flux_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' conversion of BFL's transformer, at any width: diffusers splits each single block's
    fused `linear1` (q, k, v, then the MLP's 4x) at FLUX.1's width, so a narrower transformer (the tiny
    and test models) gets stand-ins of that width there, and the real split by its own width after."""
    width = state[next(key for key in state if key.endswith("img_in.weight"))].shape[0]
    if width == PUBLISHED_FLUX_WIDTH:
        published: dict[str, torch.Tensor] = convert_flux_transformer_checkpoint_to_diffusers(state)
        return published
    fused = {key: state.pop(key) for key in list(state) if ".linear1." in key}
    for key, tensor in fused.items():
        state[key] = torch.empty(7 * PUBLISHED_FLUX_WIDTH, *tensor.shape[1:], dtype=tensor.dtype)
    converted: dict[str, torch.Tensor] = convert_flux_transformer_checkpoint_to_diffusers(state)
    for key, tensor in fused.items():
        block = "single_transformer_blocks." + key.split("single_blocks.")[1].split(".")[0] + "."
        parameter = key.rsplit(".", 1)[1]
        for part, piece in zip(
            ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
            torch.split(tensor, [width] * 3 + [4 * width]),
            strict=True,
        ):
            converted[f"{block}{part}.{parameter}"] = piece
    return converted


def layout_of(path: Path) -> Layout:
    with safe_open(path, framework="pt") as file:
        keys = set(file.keys())
    for layout in LAYOUTS:
        if layout.marker in keys or "model.diffusion_model." + layout.marker in keys:
            return layout
    raise ValueError(
        f"{path}: not a single-file checkpoint layout imagegen knows (supported: "
        f"{', '.join(layout.name for layout in LAYOUTS)}); a diffusers folder or Hub id is exported as it is"
    )


def open_single_file(checkpoint: Path | str, config: Path | str | None) -> SingleFile | None:
    """`checkpoint` as a single file configured by `config`; None for a folder or Hub id."""
    if Path(checkpoint).suffix != ".safetensors":
        if config is not None:
            raise ValueError(f"--config applies to a single .safetensors checkpoint, not to {checkpoint}")
        return None
    path = Path(checkpoint)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    layout = layout_of(path)
    if config is None:
        raise ValueError(
            f"{path} holds {layout.name} weights alone: give --config, the diffusers folder or Hub id of the "
            "model it was fine-tuned from, for its configs, tokenizers, scheduler and missing components"
        )
    folder = resolve_checkpoint(config, skip=tuple(layout.prefixes))
    index = folder / "model_index.json"
    pipeline = json.loads(index.read_text())["_class_name"] if index.is_file() else None
    if pipeline not in layout.pipelines:
        raise ValueError(
            f"--config {config} is a {pipeline or 'folder without model_index.json'}, not a "
            f"{' or '.join(layout.pipelines)} to configure {path}'s {layout.name} weights"
        )
    return SingleFile(path, layout, folder)
