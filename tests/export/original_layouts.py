"""Diffusers checkpoints written back as the single files fine-tunes ship: Stability's SGM layout for
SDXL, Black Forest Labs' for FLUX.1. Each mapping is the inverse of diffusers 0.42.1's own conversion
in `loaders/single_file_utils.py` (the function named in each docstring), so that loading the file
through `from_single_file` gives back the folder's weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def folder_weights(checkpoint: Path, subfolder: str) -> dict[str, torch.Tensor]:
    """A tiny component's one weights file (diffusers' diffusion_pytorch_model, transformers' model)."""
    (weights,) = (checkpoint / subfolder).glob("*.safetensors")
    return load_file(weights)


def folder_config(checkpoint: Path, subfolder: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((checkpoint / subfolder / "config.json").read_text())
    return config


def flux_original(transformer: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `convert_flux_transformer_checkpoint_to_diffusers`: fused q/k/v (and the single
    blocks' MLP input) concatenated, the final norm's (scale, shift) swapped back to BFL's (shift, scale)."""
    source = dict(transformer)
    original: dict[str, torch.Tensor] = {}

    def move(new: str, old: str) -> None:
        for parameter in ("weight", "bias"):
            if f"{old}.{parameter}" in source:
                original[f"{new}.{parameter}"] = source.pop(f"{old}.{parameter}")

    def fuse(new: str, olds: list[str]) -> None:
        for parameter in ("weight", "bias"):
            original[f"{new}.{parameter}"] = torch.cat([source.pop(f"{old}.{parameter}") for old in olds])

    for old, new in (
        ("timestep_embedder", "time_in"),
        ("text_embedder", "vector_in"),
        ("guidance_embedder", "guidance_in"),
    ):
        move(f"{new}.in_layer", f"time_text_embed.{old}.linear_1")
        move(f"{new}.out_layer", f"time_text_embed.{old}.linear_2")
    move("txt_in", "context_embedder")
    move("img_in", "x_embedder")
    doubles = {int(key.split(".")[1]) for key in source if key.startswith("transformer_blocks.")}
    for i in sorted(doubles):
        block, bfl = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        move(f"{bfl}img_mod.lin", f"{block}norm1.linear")
        move(f"{bfl}txt_mod.lin", f"{block}norm1_context.linear")
        fuse(f"{bfl}img_attn.qkv", [f"{block}attn.to_{part}" for part in "qkv"])
        fuse(f"{bfl}txt_attn.qkv", [f"{block}attn.add_{part}_proj" for part in "qkv"])
        for stream, query, key in (("img", "norm_q", "norm_k"), ("txt", "norm_added_q", "norm_added_k")):
            original[f"{bfl}{stream}_attn.norm.query_norm.scale"] = source.pop(f"{block}attn.{query}.weight")
            original[f"{bfl}{stream}_attn.norm.key_norm.scale"] = source.pop(f"{block}attn.{key}.weight")
        for stream, feed_forward in (("img", "ff"), ("txt", "ff_context")):
            move(f"{bfl}{stream}_mlp.0", f"{block}{feed_forward}.net.0.proj")
            move(f"{bfl}{stream}_mlp.2", f"{block}{feed_forward}.net.2")
        move(f"{bfl}img_attn.proj", f"{block}attn.to_out.0")
        move(f"{bfl}txt_attn.proj", f"{block}attn.to_add_out")
    singles = {int(key.split(".")[1]) for key in source if key.startswith("single_transformer_blocks.")}
    for i in sorted(singles):
        block, bfl = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        move(f"{bfl}modulation.lin", f"{block}norm.linear")
        fuse(f"{bfl}linear1", [f"{block}attn.to_{part}" for part in "qkv"] + [f"{block}proj_mlp"])
        original[f"{bfl}norm.query_norm.scale"] = source.pop(f"{block}attn.norm_q.weight")
        original[f"{bfl}norm.key_norm.scale"] = source.pop(f"{block}attn.norm_k.weight")
        move(f"{bfl}linear2", f"{block}proj_out")
    move("final_layer.linear", "proj_out")
    for parameter in ("weight", "bias"):
        scale, shift = source.pop(f"norm_out.linear.{parameter}").chunk(2)
        original[f"final_layer.adaLN_modulation.1.{parameter}"] = torch.cat([shift, scale])
    assert not source, f"diffusers keys left unmapped: {sorted(source)}"
    return original


RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3"}
RESNET |= {"time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}


def unet_original(unet: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Inverse of `convert_ldm_unet_checkpoint`: SGM's numbered input/middle/output blocks (one resnet,
    then its attention, per slot; a level's downsampler in the slot after its layers)."""
    layers, levels = config["layers_per_block"], len(config["block_out_channels"])
    prefixes = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2."}
    prefixes |= {"add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2."}
    prefixes |= {"conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
    prefixes |= {"mid_block.resnets.0.": "middle_block.0.", "mid_block.attentions.0.": "middle_block.1."}
    prefixes |= {"mid_block.resnets.1.": "middle_block.2."}
    for level in range(levels):
        for j in range(layers):
            slot = (layers + 1) * level + j + 1
            prefixes[f"down_blocks.{level}.resnets.{j}."] = f"input_blocks.{slot}.0."
            prefixes[f"down_blocks.{level}.attentions.{j}."] = f"input_blocks.{slot}.1."
        prefixes[f"down_blocks.{level}.downsamplers.0.conv."] = f"input_blocks.{(layers + 1) * (level + 1)}.0.op."
        for j in range(layers + 1):
            slot = (layers + 1) * level + j
            prefixes[f"up_blocks.{level}.resnets.{j}."] = f"output_blocks.{slot}.0."
            prefixes[f"up_blocks.{level}.attentions.{j}."] = f"output_blocks.{slot}.1."
        attention = "CrossAttn" in config["up_block_types"][level]
        upsampler = f"output_blocks.{(layers + 1) * level + layers}.{2 if attention else 1}."
        prefixes[f"up_blocks.{level}.upsamplers.0."] = upsampler
    original = {}
    for key, tensor in unet.items():
        prefix = next(prefix for prefix in prefixes if key.startswith(prefix))
        rest = key.removeprefix(prefix)
        if "resnets." in prefix:
            layer, parameter = rest.split(".", 1)
            rest = f"{RESNET[layer]}.{parameter}"
        original["model.diffusion_model." + prefixes[prefix] + rest] = tensor
    return original


def vae_original(vae: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Inverse of `convert_ldm_vae_checkpoint` (the tiny VAEs have no mid-block attention): LDM numbers
    the decoder's levels from the bottom, diffusers from the top."""
    levels = len(config["block_out_channels"])
    prefixes = {"encoder.conv_norm_out.": "encoder.norm_out.", "decoder.conv_norm_out.": "decoder.norm_out."}
    for side in ("encoder", "decoder"):
        for i in range(2):
            prefixes[f"{side}.mid_block.resnets.{i}."] = f"{side}.mid.block_{i + 1}."
    for level in range(levels):
        prefixes[f"encoder.down_blocks.{level}.resnets."] = f"encoder.down.{level}.block."
        prefixes[f"encoder.down_blocks.{level}.downsamplers.0."] = f"encoder.down.{level}.downsample."
        prefixes[f"decoder.up_blocks.{level}.resnets."] = f"decoder.up.{levels - 1 - level}.block."
        prefixes[f"decoder.up_blocks.{level}.upsamplers.0."] = f"decoder.up.{levels - 1 - level}.upsample."
    original = {}
    for key, tensor in vae.items():
        prefix = next((prefix for prefix in prefixes if key.startswith(prefix)), "")
        rest = key.removeprefix(prefix).replace("conv_shortcut", "nin_shortcut")
        original["first_stage_model." + prefixes.get(prefix, "") + rest] = tensor
    return original


def clip_original(encoder: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `convert_ldm_clip_checkpoint` for SDXL's CLIP-L: transformers' keys under
    `conditioner.embedders.0.transformer.text_model.` (transformers 5.6+ saves them without `text_model.`)."""
    return {
        "conditioner.embedders.0.transformer.text_model." + key.removeprefix("text_model."): tensor
        for key, tensor in encoder.items()
    }


OPEN_CLIP_NAMES = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
OPEN_CLIP_NAMES["self_attn.out_proj"] = "attn.out_proj"


def open_clip_original(encoder: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `convert_open_clip_checkpoint` for SDXL's OpenCLIP bigG: `resblocks` with one fused
    `in_proj` per attention, the projection stored transposed (x @ text_projection)."""
    prefix = "conditioner.embedders.1.model."
    source = dict(encoder)
    original = {
        prefix + "positional_embedding": source.pop("text_model.embeddings.position_embedding.weight"),
        prefix + "token_embedding.weight": source.pop("text_model.embeddings.token_embedding.weight"),
        prefix + "ln_final.weight": source.pop("text_model.final_layer_norm.weight"),
        prefix + "ln_final.bias": source.pop("text_model.final_layer_norm.bias"),
        prefix + "text_projection": source.pop("text_projection.weight").T.contiguous(),
    }
    layers = {int(key.split(".")[3]) for key in source if key.startswith("text_model.encoder.layers.")}
    for i in sorted(layers):
        layer, block = f"text_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for parameter in ("weight", "bias"):
            parts = [source.pop(f"{layer}self_attn.{part}_proj.{parameter}") for part in "qkv"]
            original[f"{block}attn.in_proj_{parameter}"] = torch.cat(parts)
            for new, old in OPEN_CLIP_NAMES.items():
                original[f"{block}{old}.{parameter}"] = source.pop(f"{layer}{new}.{parameter}")
    assert not source, f"transformers keys left unmapped: {sorted(source)}"
    return original


def write_flux_single_file(checkpoint: Path, out: Path) -> Path:
    """The transformer alone, as Black Forest Labs publish FLUX.1 (flux1-schnell.safetensors)."""
    save_file(flux_original(folder_weights(checkpoint, "transformer")), out)
    return out


def write_sdxl_single_file(checkpoint: Path, out: Path) -> Path:
    """UNet, both text encoders and the VAE in one file, as Stability publish SDXL and most
    fine-tunes ship it (sd_xl_base_1.0.safetensors)."""
    state = unet_original(folder_weights(checkpoint, "unet"), folder_config(checkpoint, "unet"))
    state |= vae_original(folder_weights(checkpoint, "vae"), folder_config(checkpoint, "vae"))
    state |= clip_original(folder_weights(checkpoint, "text_encoder"))
    state |= open_clip_original(folder_weights(checkpoint, "text_encoder_2"))
    save_file(state, out)
    return out
