"""Attention leaves the exporter as ONNX Runtime's fused op, or as standard ONNX for TensorRT."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from export import flux
from export.onnx import export_onnx, sample_inputs

FUSED = ("com.microsoft", "MultiHeadAttention")


def operators(path: Path) -> Counter[tuple[str, str]]:
    return Counter((node.domain, node.op_type) for node in onnx.load(str(path), load_external_data=False).graph.node)


@pytest.mark.parametrize(
    ("model", "attention_layers"),
    # FLUX: one joint and one single block. SDXL's UNet: self and cross attention in each of its four
    # transformer blocks (one down, one in the middle, two up).
    [("flux-schnell_transformer", 2), ("sdxl_unet", 8)],
)
def test_denoisers_served_by_onnx_runtime_attend_fused(
    model_repository: Path, model: str, attention_layers: int
) -> None:
    found = operators(model_repository / model / "1" / "model.onnx")
    assert found[FUSED] == attention_layers
    assert found[("", "Softmax")] == 0


def test_causal_text_encoder_keeps_standard_attention(model_repository: Path) -> None:
    """CLIP masks its attention causally, which the fused op's exported form does not take."""
    found = operators(model_repository / "flux-schnell_text_encoder" / "1" / "model.onnx")
    assert found[FUSED] == 0
    assert found[("", "Softmax")] == 2


def test_tensorrt_export_is_standard_onnx_with_the_same_output(tiny_checkpoint: Path, tmp_path: Path) -> None:
    modules = flux.load_modules(tiny_checkpoint)
    components, _ = flux.describe(modules)
    transformer = next(component for component in components if component.name == "transformer")
    outputs = {}
    for fused in (True, False):
        path = tmp_path / str(fused) / "model.onnx"
        assert export_onnx(modules["transformer"], transformer, path, fused_attention=fused) < 1e-4
        domains = {domain for domain, _ in operators(path)}
        assert domains == ({"", "com.microsoft"} if fused else {""})
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs[fused] = session.run(None, {name: t.numpy() for name, t in sample_inputs(transformer).items()})[0]
    assert np.abs(outputs[True] - outputs[False]).max() < 1e-5
