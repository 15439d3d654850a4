"""`imagegen tiny --preset real-width`: the published widths, depth cut, denoisers past protobuf's 2 GB.

Built on torch's meta device (shapes only, no memory): the weights themselves are what
tests/e2e/test_real_width.py exports and serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from export.checkpoint import export_checkpoint
from export.real_width import flux_models, sdxl_models
from export.report import summary_table
from export.tiny import CLIP_BANG, build_clip_tokenizer, build_t5_tokenizer

GIB = 2**30


def parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def flux(dev: bool) -> dict[str, Any]:
    """The preset's FLUX models, shapes only."""
    tokenizer, tokenizer_2 = build_clip_tokenizer(), build_t5_tokenizer()
    with torch.device("meta"):
        return flux_models(0, dev, tokenizer, tokenizer_2)


def sdxl() -> dict[str, Any]:
    tokenizer, tokenizer_2 = build_clip_tokenizer(), build_clip_tokenizer(pad_token=CLIP_BANG)
    with torch.device("meta"):
        return sdxl_models(0, tokenizer, tokenizer_2)


def test_flux_has_the_published_widths_and_rope_axes() -> None:
    schnell, dev = flux(dev=False), flux(dev=True)
    transformer = schnell["transformer"].config
    assert (transformer.num_attention_heads, transformer.attention_head_dim) == (24, 128)
    assert tuple(transformer.axes_dims_rope) == (16, 56, 56)
    assert (transformer.joint_attention_dim, transformer.pooled_projection_dim, transformer.in_channels) == (
        4096,
        768,
        64,
    )
    assert not transformer.guidance_embeds and dev["transformer"].config.guidance_embeds
    t5 = schnell["text_encoder_2"].config
    assert (t5.d_model, t5.d_ff, t5.num_heads, t5.d_kv, t5.vocab_size) == (4096, 10240, 64, 64, 32128)
    assert t5.relative_attention_num_buckets == 32 and t5.is_gated_act
    clip = schnell["text_encoder"].config
    assert (clip.hidden_size, clip.intermediate_size, clip.num_attention_heads, clip.vocab_size) == (
        768,
        3072,
        12,
        49408,
    )
    vae = schnell["vae"].config
    assert (vae.latent_channels, tuple(vae.block_out_channels), vae.layers_per_block) == (16, (128, 256, 512, 512), 2)
    assert (vae.scaling_factor, vae.shift_factor) == (0.3611, 0.1159)


def test_sdxl_has_the_published_widths() -> None:
    models = sdxl()
    unet = models["unet"].config
    assert tuple(unet.block_out_channels) == (320, 640, 1280)
    assert tuple(unet.attention_head_dim) == (5, 10, 20)  # heads of 64 channels
    assert (unet.cross_attention_dim, unet.addition_time_embed_dim, unet.layers_per_block) == (2048, 256, 2)
    big_g = models["text_encoder_2"].config
    assert (big_g.hidden_size, big_g.intermediate_size, big_g.num_attention_heads, big_g.projection_dim) == (
        1280,
        5120,
        20,
        1280,
    )
    vae = models["vae"].config
    assert (vae.latent_channels, tuple(vae.block_out_channels), vae.scaling_factor) == (
        4,
        (128, 256, 512, 512),
        0.13025,
    )


def test_each_denoiser_is_past_protobufs_2_gb_in_fp32() -> None:
    assert parameters(flux(dev=False)["transformer"]) * 4 > 2 * GIB
    assert parameters(sdxl()["unet"]) * 4 > 2 * GIB


def test_tiny_export_reports_every_component(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """The closing table of `imagegen export`: one row per component with what it cost."""
    reports = export_checkpoint(checkpoints["flux-schnell"], "flux-schnell", tmp_path, lora_rank=0)
    assert [report.name for report in reports] == [
        "text_encoder",
        "text_encoder_2",
        "transformer",
        "vae_decoder",
        "vae_encoder",
    ]
    for report in reports:
        onnx_file = tmp_path / f"flux-schnell_{report.name}" / "1" / "model.onnx"
        assert report.file_bytes == onnx_file.stat().st_size > 0
        assert report.parameters > 0 and report.peak_rss_bytes > 0 and report.seconds > 0
        assert report.dtype == "fp32"
    table = summary_table(reports).splitlines()
    assert table[0].split()[:4] == ["component", "dtype", "parameters", "file"]
    assert [line.split()[0] for line in table[2:]] == [report.name for report in reports]
