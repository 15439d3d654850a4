"""What cannot run here (Docker, a GPU) checked statically: the compose file, the images it names,
and the model configs it serves, against NVIDIA's Triton image and its native backends."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from export.tensorrt import PLAN_FILE, PLATFORM, tensorrt_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(ROOT.glob("model_repository/*/config.pbtxt"))
TENSORRT_TYPES = {
    pb.TYPE_FP32,
    pb.TYPE_FP16,
    pb.TYPE_BF16,
    pb.TYPE_INT32,
    pb.TYPE_INT64,
    pb.TYPE_INT8,
    pb.TYPE_UINT8,
    pb.TYPE_BOOL,
}
"""Tensor types a TensorRT plan can take or give (no strings: the tokenizer stays a Python model;
uint8 only at the network's edges, as the VAE decoder's pixels and the safety model's input)."""
LONG_RUNNING = ("triton", "postgres", "frontend", "gateway")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def dockerfile(service: dict[str, Any]) -> str:
    return (ROOT / service["build"]["dockerfile"]).read_text()


def base_image(service: dict[str, Any]) -> str:
    """The FROM line's image, its ARGs resolved to the compose file's defaults (`${NAME:-default}`)."""
    text = dockerfile(service)
    arguments = {name: value for name, value in re.findall(r"^ARG (\w+)=(\S+)$", text, re.M)}
    for name, value in service["build"].get("args", {}).items():
        arguments[name] = re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", value)
    image = re.search(r"^FROM (\S+)", text, re.M)
    assert image is not None
    return re.sub(r"\$\{(\w+)\}", lambda m: arguments[m.group(1)], image.group(1))


def test_triton_runs_nvidia_image_on_the_gpu_serving_the_repository() -> None:
    triton = services()["triton"]
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", base_image(triton))
    assert "./model_repository:/models:ro" in triton["volumes"]
    assert "--model-repository=/models" in triton["command"]
    assert triton["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_the_export_job_builds_tensorrt_plans_with_the_tensorrt_of_tritons_release() -> None:
    export, triton = services()["export"], services()["triton"]
    assert export["profiles"] == ["export"]
    release = base_image(triton).split(":")[1]
    assert base_image(export) == f"nvcr.io/nvidia/tensorrt:{release}"
    assert re.search(r'^ENTRYPOINT \["imagegen", "export", "--engine", "tensorrt"\]$', dockerfile(export), re.M)
    assert "./model_repository:/models" in export["volumes"]
    assert export["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_postgres_is_the_official_image_with_a_volume() -> None:
    compose_file = compose()
    postgres = compose_file["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    volume, mount = postgres["volumes"][0].split(":")
    assert mount == "/var/lib/postgresql/data" and volume in compose_file["volumes"]
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]


def test_frontend_replicas_share_triton_postgres_and_one_session_secret() -> None:
    found = services()
    frontend, postgres = found["frontend"], found["postgres"]
    environment = frontend["environment"]
    http_port = next(arg for arg in found["triton"]["command"] if arg.startswith("--http-port=")).split("=")[1]
    assert environment["IMAGEGEN_TRITON_URL"] == f"triton:{http_port}"
    store = urlsplit(environment["IMAGEGEN_STORE"])
    assert (store.scheme, store.hostname, store.port) == ("postgresql", "postgres", 5432)
    assert (store.username, store.path) == (postgres["environment"]["POSTGRES_USER"], "/imagegen")
    assert postgres["environment"]["POSTGRES_DB"] == "imagegen"
    assert environment["IMAGEGEN_SESSION_SECRET"].startswith("${IMAGEGEN_SESSION_SECRET:?")
    assert frontend["deploy"]["replicas"] >= 2
    assert "ports" not in frontend  # reached through the gateway only
    assert {name: dep["condition"] for name, dep in frontend["depends_on"].items()} == {
        "triton": "service_healthy",
        "postgres": "service_healthy",
    }


def test_the_frontend_image_installs_the_postgres_driver() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(requirement.startswith("psycopg[binary]") for requirement in extras["postgres"])
    assert re.search(r'^RUN pip install .*"\.\[postgres\]"', dockerfile(services()["frontend"]), re.M)


def test_one_address_balances_the_frontend_replicas() -> None:
    found = services()
    gateway = found["gateway"]
    assert re.fullmatch(r"nginx:[\d.]+-alpine", gateway["image"])
    host_config, mount = gateway["volumes"][0].removesuffix(":ro").split(":")
    config = (ROOT / host_config).read_text()
    frontend_port = found["frontend"]["expose"][0]
    assert re.search(rf"^\s*server frontend:{frontend_port}\b", config, re.M)
    assert re.search(r"^\s*proxy_pass http://frontends;", config, re.M)
    listen = re.search(r"^\s*listen (\d+);", config, re.M)
    assert listen is not None and gateway["ports"] == [f"8000:{listen.group(1)}"]
    assert mount == "/etc/nginx/conf.d/default.conf"
    assert gateway["depends_on"]["frontend"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_every_long_running_service_has_a_healthcheck_and_restarts(name: str) -> None:
    service = services()[name]
    assert service["healthcheck"]["test"][0] == "CMD"
    assert service["restart"] == "unless-stopped"


def test_every_path_a_dockerfile_copies_or_compose_mounts_exists() -> None:
    for service in services().values():
        if "build" in service:
            for source in re.findall(r"^COPY (\S+)", dockerfile(service), re.M):
                assert (ROOT / source).exists(), f"{service['build']['dockerfile']} copies missing {source}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"compose mounts missing {source}"


def check_for_native_backend(config: pb.ModelConfig) -> None:
    """The model config is one NVIDIA's Triton image loads with the backend it names."""
    assert config.max_batch_size > 0 and config.HasField("dynamic_batching")
    assert config.input and config.output
    assert all(group.kind == pb.ModelInstanceGroup.KIND_AUTO for group in config.instance_group)
    if config.platform == PLATFORM:
        assert (config.backend, config.default_model_filename) == ("", PLAN_FILE)
        assert all(t.data_type in TENSORRT_TYPES for t in [*config.input, *config.output])
    elif config.backend == "onnxruntime" or config.platform == "onnxruntime_onnx":
        assert config.default_model_filename == "model.onnx"
    else:
        custom = re.findall(r"^COPY backends/(\w+)/", dockerfile(services()["triton"]), re.M)
        assert config.backend in {"python", *custom}, f"{config.name}: no backend {config.backend!r} in the image"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_model_config_is_valid_for_the_native_backend_it_names(path: Path) -> None:
    config = text_format.Parse(path.read_text(), pb.ModelConfig())
    assert config.name == path.parent.name
    check_for_native_backend(config)


@pytest.mark.parametrize(
    "path", [p for p in CONFIGS if 'backend: "onnxruntime"' in p.read_text()], ids=lambda p: p.parent.name
)
def test_the_tensorrt_export_of_each_onnx_model_is_valid_for_tensorrt(path: Path) -> None:
    onnx = text_format.Parse(path.read_text(), pb.ModelConfig())
    written = text_format.MessageToString(tensorrt_config(onnx))
    check_for_native_backend(text_format.Parse(written, pb.ModelConfig()))
