"""The embedded ONNX Runtime shim's choice of execution providers (backends/onnxruntime/model.py): the
GPU's where this ONNX Runtime offers them (onnxruntime-gpu, `imagegen[gpu]`), the CPU's always last.

The shim runs inside Triton's Python backend stub, which provides `triton_python_backend_utils`; the
module is loaded here with a stand-in for it, to call the choice itself on this CPU."""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnxruntime
import pytest

SHIM = Path(__file__).resolve().parents[2] / "backends" / "onnxruntime" / "model.py"
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


@pytest.fixture(scope="module")
def shim() -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
        spec = importlib.util.spec_from_file_location("onnxruntime_shim", SHIM)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module


def providers_parameter(value: str) -> dict[str, Any]:
    return {"execution_providers": {"string_value": value}}


def test_gpu_build_prefers_tensorrt_then_cuda_then_cpu(shim: Any) -> None:
    assert shim.execution_providers([TENSORRT, CUDA, CPU], {}) == [TENSORRT, CUDA, CPU]
    assert shim.execution_providers([CUDA, CPU], {}) == [CUDA, CPU]


def test_cpu_build_runs_on_the_cpu_alone(shim: Any) -> None:
    assert shim.execution_providers([CPU], {}) == [CPU]
    assert shim.execution_providers(onnxruntime.get_available_providers(), {}) == [CPU]  # this machine


def test_a_config_may_name_its_own_providers_and_keeps_the_cpu_fallback(shim: Any) -> None:
    assert shim.execution_providers([TENSORRT, CUDA, CPU], providers_parameter("CUDAExecutionProvider")) == [CUDA, CPU]
    assert shim.execution_providers([CPU], providers_parameter(f"{CUDA}, {CPU}")) == [CPU]
