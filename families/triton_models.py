"""The contract between the exporter and the frontend: what a pipeline's components are called in
Triton, and which config parameter of its denoiser carries the pipeline's metadata."""

from __future__ import annotations

PIPELINE_PARAMETER = "imagegen.pipeline"
"""Config parameter (JSON) of a pipeline's denoiser model; the exporter writes it, the catalog reads it."""


def model_name(pipeline: str, component: str) -> str:
    """The Triton model serving `component` (e.g. `transformer`) of the pipeline `pipeline`."""
    return f"{pipeline}_{component}"
