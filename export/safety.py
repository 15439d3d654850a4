"""The image-safety slot of the model repository: Triton model `image_safety`.

Its contract is what the frontend relies on: uint8 RGB images `(batch, H, W, 3)` of any size in (the
VAE decoders' pixels as they are, a quarter of float32's bytes; the graph scales them to [0, 1]),
one `unsafe_score` in [0, 1] per image out; the model does its own resizing. No trained
classifier can be downloaded here, so `imagegen safety-model` writes a small convolutional net with
random weights (fixed seed) whose output bias keeps every score far below the default threshold:
a placeholder with the real contract, for an operator to replace with a trained classifier.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from export.components import BATCH, Component, TensorSpec
from export.onnx import export_onnx
from export.repository import onnx_model_config, write_config

log = logging.getLogger(__name__)

NAMESPACE = "image"
"""The Triton model is `<namespace>_<component>` like a pipeline's components: `image_safety`."""
INPUT_SIDE = 64
"""Images are downscaled to this square inside the graph, so any generated size can be checked."""
PLACEHOLDER_BIAS = -6.0
"""Output logit bias of the random classifier: scores near sigmoid(-6) = 0.0025, all images pass."""

COMPONENT = Component(
    name="safety",
    subfolder="",
    inputs=(TensorSpec("image", "UINT8", (BATCH, "height", "width", 3)),),
    outputs=(TensorSpec("unsafe_score", "FP32", (BATCH, 1)),),
    sample_sizes={BATCH: 2, "height": 96, "width": 80},
)


class SafetyClassifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Linear(16, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        rgb = image.permute(0, 3, 1, 2).to(torch.float32) / 255
        small = F.interpolate(rgb, size=(INPUT_SIDE, INPUT_SIDE), mode="bilinear", align_corners=False)
        return torch.sigmoid(self.head(self.features(small * 2 - 1)))


def export_safety_model(repository: Path, seed: int = 0, version: int = 1) -> Path:
    """Write `image_safety` (config and ONNX) into `repository`; its folder."""
    torch.manual_seed(seed)
    classifier = SafetyClassifier()
    with torch.no_grad():
        classifier.head.bias.fill_(PLACEHOLDER_BIAS)
    folder = write_config(repository, onnx_model_config(NAMESPACE, COMPONENT))
    export_onnx(classifier, COMPONENT, folder / str(version) / "model.onnx")
    log.info("wrote the placeholder image-safety classifier to %s", folder)
    return folder
