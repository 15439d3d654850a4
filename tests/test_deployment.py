"""What cannot run here (Docker, a GPU) checked statically: the compose file, the images it names,
and the model configs it serves, against NVIDIA's Triton image and its native backends."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from export.tensorrt import PLAN_FILE, PLATFORM, tensorrt_config
from frontend.embedded_triton import RESTRICTED_APIS
from frontend.triton import SECRET_HEADER
from tests.harness import Server, imagegen, serving
from tests.test_layers import PACKAGES, modules

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
    assert environment["IMAGEGEN_SECRETS_KEY"].startswith("${IMAGEGEN_SECRETS_KEY:?")
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


def gateway_config() -> str:
    host_config, mount = services()["gateway"]["volumes"][0].removesuffix(":ro").split(":")
    assert mount == "/etc/nginx/conf.d/default.conf"
    return (ROOT / host_config).read_text()


def nginx_servers(config: str) -> dict[str, str]:
    """Each top-level `server { ... }` block of an nginx config (its closing brace in column 0), by its
    `listen` line's arguments."""
    servers = {}
    for block in re.findall(r"^server \{$(.*?)^\}$", config, re.M | re.S):
        listen = re.search(r"^\s*listen ([^;]+);", block, re.M)
        assert listen is not None
        servers[listen.group(1)] = block
    return servers


def test_one_address_balances_the_frontend_replicas() -> None:
    found = services()
    gateway, config = found["gateway"], gateway_config()
    assert re.fullmatch(r"nginx:[\d.]+-alpine", gateway["image"])
    frontend_port = found["frontend"]["expose"][0]
    assert re.search(rf"^\s*server frontend:{frontend_port}\b", config, re.M)
    assert re.search(r"^\s*proxy_pass http://frontends;", nginx_servers(config)["443 ssl"], re.M)
    assert gateway["depends_on"]["frontend"]["condition"] == "service_healthy"


def test_the_gateway_serves_tls_from_the_operators_certificate_redirects_http_and_sends_hsts() -> None:
    gateway = services()["gateway"]
    servers = nginx_servers(gateway_config())
    assert set(servers) == {"80", "443 ssl"} and sorted(gateway["ports"]) == ["443:443", "80:80"]
    # Certificate and key: files named by the environment, mounted where the TLS server reads them.
    mounted = {target: source for source, target in (v.removesuffix(":ro").rsplit(":", 1) for v in gateway["volumes"])}
    for directive, variable in (("ssl_certificate", "TLS_CERTIFICATE"), ("ssl_certificate_key", "TLS_CERTIFICATE_KEY")):
        path = re.search(rf"^\s*{directive} (\S+);", servers["443 ssl"], re.M)
        assert path is not None and mounted[path.group(1)].startswith(f"${{{variable}:?")
    hsts = re.search(r'^\s*add_header Strict-Transport-Security "max-age=(\d+)[^"]*" always;', servers["443 ssl"], re.M)
    assert hsts is not None and int(hsts.group(1)) >= 365 * 24 * 3600
    assert re.search(r"^\s*proxy_set_header X-Forwarded-Proto \$scheme;", servers["443 ssl"], re.M)
    # Plain HTTP: every path redirects to HTTPS, but the health check the container runs on itself.
    assert re.search(r"location / \{\s*return 301 https://\$host\$request_uri;\s*\}", servers["80"])
    health = re.search(r"location = /healthz \{([^}]*)\}", servers["80"])
    assert health is not None and re.findall(r"(allow|deny) (\S+);", health.group(1)) == [
        ("allow", "127.0.0.1"),
        ("deny", "all"),
    ]
    assert gateway["healthcheck"]["test"][-1] == "http://127.0.0.1/healthz"


def test_frontends_believe_forwarded_headers_from_the_gateway_alone() -> None:
    found = services()
    frontends_network = found["gateway"]["networks"]["frontends"]
    assert found["frontend"]["environment"]["IMAGEGEN_FORWARDED_ALLOW_IPS"] == frontends_network["ipv4_address"]
    # The client's address is the one the gateway saw, never one the client wrote.
    assert re.search(r"^\s*proxy_set_header X-Forwarded-For \$remote_addr;", gateway_config(), re.M)


def test_triton_model_control_needs_the_frontends_secret_grpc_is_off_and_only_frontends_reach_it() -> None:
    compose_file = compose()
    found = compose_file["services"]
    command = found["triton"]["command"]
    assert "--allow-grpc=false" in command
    restricted = next(arg for arg in command if arg.startswith("--http-restricted-api="))
    apis, header = restricted.removeprefix("--http-restricted-api=").split(":", 1)
    assert set(apis.split(",")) == set(RESTRICTED_APIS)
    secret = found["frontend"]["environment"]["IMAGEGEN_TRITON_SECRET"]
    assert header == f"{SECRET_HEADER}={secret}" and secret.startswith("${IMAGEGEN_TRITON_SECRET:?")
    # Triton and PostgreSQL only on internal networks that hold nothing but them and the frontends.
    for name in ("triton", "postgres"):
        assert "ports" not in found[name]
        for network in found[name]["networks"]:
            assert compose_file["networks"][network]["internal"] is True
            members = {other for other, service in found.items() if network in service.get("networks", ())}
            assert members <= {"triton", "postgres", "frontend"}, f"{network} holds {members}"


@pytest.fixture(scope="module")
def behind_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real frontend whose gateway is 127.0.0.2 (compose's address cannot be reached here), serving
    only the image-safety model (no pipeline is needed to sign in), with an account to sign in as."""
    from export.safety import export_safety_model

    repository = tmp_path_factory.mktemp("safety-only")
    export_safety_model(repository)
    settings = {"IMAGEGEN_FORWARDED_ALLOW_IPS": "127.0.0.2"}
    with serving(repository, tmp_path_factory.mktemp("behind-gateway"), settings=settings) as server:
        imagegen(server, "accounts", "create", "alice", "--plan", "studio", "--password-stdin", stdin=PASSWORD)
        yield server


PASSWORD = "correct horse battery staple"


@pytest.mark.parametrize(("source", "secure"), [("127.0.0.2", True), ("127.0.0.1", False)])
def test_the_session_cookie_is_secure_when_the_gateway_says_https_and_only_then(
    behind_gateway: Server, source: str, secure: bool
) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source)) as client:
        response = client.post(
            f"{behind_gateway.base_url}/auth/login",
            json={"username": "alice", "password": PASSWORD},
            headers={"X-Forwarded-Proto": "https"},
            timeout=30,
        )
    assert response.status_code == 200, response.text
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("imagegen_session="))
    assert ("secure" in {part.strip().lower() for part in cookie.split(";")}) == secure


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


def first_party_imports(packages: set[str]) -> set[str]:
    """The repository's top-level packages that the modules of `packages` import when they run."""
    return {
        imported.split(".")[0]
        for name, imported_names in modules()
        if name.split(".")[0] in packages
        for imported in imported_names
    } & set(PACKAGES)


@pytest.mark.parametrize("name", ["frontend", "export"])
def test_an_image_that_installs_a_package_copies_every_package_it_imports(name: str) -> None:
    """`pip install .` in the image installs what was copied: a package left out fails at import."""
    copied = set(re.findall(r"^COPY (\w+) ", dockerfile(services()[name]), re.M))
    assert first_party_imports(copied) - {"backends"} <= copied


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
