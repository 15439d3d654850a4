"""What cannot run here (Docker, a GPU) checked statically: the compose file and the model configs
it serves are consistent with NVIDIA's Triton image and its native backends."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
NATIVE_BACKENDS = {"onnxruntime", "tensorrt", "python"}


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def dockerfile(service: dict[str, Any]) -> str:
    return (ROOT / service["build"]["dockerfile"]).read_text()


def test_triton_runs_nvidia_image_on_the_gpu_serving_the_repository() -> None:
    triton = compose()["services"]["triton"]
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:\$\{TRITON_VERSION\}-py3$", dockerfile(triton), re.M)
    assert "./model_repository:/models:ro" in triton["volumes"]
    assert "--model-repository=/models" in triton["command"]
    assert triton["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_frontend_talks_to_the_triton_service_http_port() -> None:
    services = compose()["services"]
    http_port = next(arg for arg in services["triton"]["command"] if arg.startswith("--http-port=")).split("=")[1]
    assert services["frontend"]["environment"]["IMAGEGEN_TRITON_URL"] == f"triton:{http_port}"
    assert services["frontend"]["depends_on"]["triton"]["condition"] == "service_healthy"


def test_every_path_a_dockerfile_copies_exists() -> None:
    for service in compose()["services"].values():
        for source in re.findall(r"^COPY (\S+)", dockerfile(service), re.M):
            assert (ROOT / source).exists(), f"{service['build']['dockerfile']} copies missing {source}"


@pytest.mark.parametrize("path", sorted(ROOT.glob("model_repository/*/config.pbtxt")), ids=lambda p: p.parent.name)
def test_model_config_is_valid_for_triton_image(path: Path) -> None:
    config = text_format.Parse(path.read_text(), pb.ModelConfig())
    assert config.name == path.parent.name
    custom = re.findall(r"^COPY backends/(\w+)/", dockerfile(compose()["services"]["triton"]), re.M)
    assert config.backend in NATIVE_BACKENDS | set(custom)
    assert all(group.kind == pb.ModelInstanceGroup.KIND_AUTO for group in config.instance_group)
    assert config.max_batch_size > 0 and config.HasField("dynamic_batching")
    assert config.input and config.output
