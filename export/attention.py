"""Attention exported as ONNX Runtime's fused `MultiHeadAttention` (domain com.microsoft).

The exporter's standard translation of `scaled_dot_product_attention` is MatMul, Softmax, MatMul: the
scores of every head, tokens x tokens, go to memory and back. At 1024x1024 a FLUX image is 4,352
tokens, 76 MB of scores a head, and that traffic was 80 % of a bench-preset transformer step on this
CPU (150 ms). ONNX Runtime's CPU kernel for `MultiHeadAttention` is a flash attention that keeps the
scores in cache tiles: the same step takes ~95 ms, and two steps running side by side scale where
the unfused ones contend for memory bandwidth.

Only ONNX Runtime knows that op: `--engine tensorrt` exports the standard graph, which TensorRT
fuses by itself. Attention with a mask or causal (CLIP's text encoder) keeps the standard translation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import onnx
import torch
from onnx.defs import OpSchema
from onnxscript import INT64, values
from onnxscript import opset18 as op
from onnxscript.function_libs.torch_lib.ops.nn import aten_scaled_dot_product_attention

DOMAIN = "com.microsoft"


def _register_schema() -> None:
    """The exporter builds only ops whose schema ONNX knows, and ONNX does not ship ONNX Runtime's:
    the subset used here (query, key, value in; `num_heads`, `scale`) is declared once per process."""
    if onnx.defs.has("MultiHeadAttention", DOMAIN):
        return
    onnx.defs.register_schema(
        OpSchema(
            "MultiHeadAttention",
            DOMAIN,
            1,
            inputs=[OpSchema.FormalParameter(name, "T") for name in ("query", "key", "value")],
            outputs=[OpSchema.FormalParameter("output", "T")],
            type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "")],
            attributes=[
                OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "", required=True),
                OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, "", required=False),
            ],
        )
    )


def _fused_attention(
    query: Any,
    key: Any,
    value: Any,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Any:
    """`scaled_dot_product_attention` on (batch, heads, tokens, head_dim) tensors, as ONNX Runtime's
    op on (batch, tokens, heads * head_dim); the layout changes around it are transposes that ONNX
    Runtime cancels against the model's own."""
    heads = query.shape[1]
    if attn_mask is not None or is_causal or enable_gqa or not isinstance(heads, int) or key.shape[1] != heads:
        return aten_scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    flat = shape_constant([0, 0, -1])

    def tokens_major(tensor: Any) -> Any:
        return op.Reshape(op.Transpose(tensor, perm=[0, 2, 1, 3]), flat)

    attributes: dict[str, Any] = {"num_heads": heads} if scale is None else {"num_heads": heads, "scale": scale}
    fused = values.Opset(DOMAIN, 1).MultiHeadAttention(
        tokens_major(query), tokens_major(key), tokens_major(value), **attributes
    )
    per_head = op.Reshape(fused, shape_constant([0, 0, heads, -1]))
    return op.Transpose(per_head, perm=[0, 2, 1, 3])


def shape_constant(dims: list[int]) -> INT64:
    """A Reshape target. onnxscript types `Constant` as any tensor type; `value_ints` makes it INT64."""
    return cast(INT64, op.Constant(value_ints=dims))


def fused_attention_translation() -> dict[Callable[..., Any], Callable[..., Any]]:
    """`torch.onnx.export`'s `custom_translation_table` that exports attention fused."""
    _register_schema()
    return {torch.ops.aten.scaled_dot_product_attention.default: _fused_attention}
