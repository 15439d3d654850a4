"""The Kubernetes manifests (deploy/kubernetes/): valid against the API's pinned schemas, offline, and
consistent with what schema validation cannot see: the images and Dockerfiles, the ports and
endpoints the processes really serve, the settings the frontend reads, and no secret in a file."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from frontend.embedded_triton import restricted_api_arg

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "deploy/kubernetes"
KUBERNETES_VERSION = "1.37.0"
"""The schemas kubernetes-validate (pinned in pyproject) bundles for this version: no download."""
TRITON_HEALTH = {"/v2/health/ready", "/v2/health/live"}
"""The KServe v2 protocol's health endpoints, which tritonserver serves on its HTTP port."""
SECRET_NAME = re.compile(r"SECRET|KEY|PASSWORD|TOKEN|STORE")
"""Environment variables that hold a secret (IMAGEGEN_STORE: a database URL with its password)."""


def documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def resources() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            for document in documents(path):
                yield path, document


def named(kind: str, name: str) -> dict[str, Any]:
    found = [doc for _, doc in resources() if doc["kind"] == kind and doc["metadata"].get("name") == name]
    assert len(found) == 1, f"one {kind} {name}"
    return found[0]


def container(deployment: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = named("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return containers[0]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for _, doc in resources():
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"].get("name") or doc["metadata"]["generateName"], doc["spec"]["template"]["spec"]


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in container.get("env", [])}


@pytest.mark.parametrize(
    ("path", "document"),
    list(resources()),
    ids=lambda value: value.name if isinstance(value, Path) else value.get("kind", ""),
)
def test_every_manifest_is_valid_against_the_pinned_kubernetes_schemas(path: Path, document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_names_every_long_running_manifest_and_not_the_export_job() -> None:
    kustomization = documents(MANIFESTS / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    present = {path.name for path in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    assert all(doc["kind"] != "Job" for path, doc in resources() if path.name in listed)


def test_every_image_is_built_by_a_dockerfile_of_the_repository() -> None:
    kustomized = {image["name"] for image in documents(MANIFESTS / "kustomization.yaml")[0]["images"]}
    for name, spec in pod_specs():
        for each in spec["containers"]:
            image = each["image"].split(":")[0]
            assert image.startswith("imagegen/"), f"{name} runs an image this repository does not build"
            assert (ROOT / "deploy" / f"{image.removeprefix('imagegen/')}.Dockerfile").exists(), image
            assert image in kustomized or name.startswith("export"), f"{image}: not retagged by the kustomization"


def test_triton_serves_the_ports_and_restricted_apis_its_probes_and_service_use() -> None:
    triton = container("triton")
    args = triton["args"]
    ports = {port["name"]: port["containerPort"] for port in triton["ports"]}
    assert f"--http-port={ports['http']}" in args and f"--metrics-port={ports['metrics']}" in args
    assert restricted_api_arg("$(IMAGEGEN_TRITON_SECRET)") in args
    assert "IMAGEGEN_TRITON_SECRET" in env(triton)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert triton[probe]["httpGet"]["path"] in TRITON_HEALTH and triton[probe]["httpGet"]["port"] == "http"
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    mount = next(m for m in triton["volumeMounts"] if m["mountPath"] == "/models")
    assert mount["readOnly"] is True


def test_the_frontends_find_every_triton_pod_through_the_headless_service() -> None:
    headless = named("Service", "triton-headless")
    assert headless["spec"]["clusterIP"] == "None"
    triton_labels = named("Deployment", "triton")["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= triton_labels.items()
    port = next(p["port"] for p in headless["spec"]["ports"] if p["name"] == "http")
    url = env(container("frontend"))["IMAGEGEN_TRITON_URL"]["value"]
    assert re.fullmatch(rf"dns://triton-headless:{port}", url)


def frontend_routes() -> set[str]:
    """The paths frontend/app.py routes, read from its `Route("...")` declarations."""
    tree = ast.parse((ROOT / "frontend/app.py").read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", "") == "Route"
        and isinstance(node.args[0], ast.Constant)
    }


def test_the_frontends_probes_and_ports_are_what_the_image_and_settings_serve() -> None:
    frontend = container("frontend")
    ports = {port["name"]: port["containerPort"] for port in frontend["ports"]}
    dockerfile = (ROOT / "deploy/frontend.Dockerfile").read_text()
    assert f"EXPOSE {ports['http']}" in dockerfile
    assert env(frontend)["IMAGEGEN_METRICS_PORT"]["value"] == str(ports["metrics"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert frontend[probe]["httpGet"]["path"] in frontend_routes()
    grace = named("Deployment", "frontend")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    shutdown = int(env(frontend)["IMAGEGEN_SHUTDOWN_GRACE"]["value"])
    assert grace > shutdown + frontend["lifecycle"]["preStop"]["sleep"]["seconds"]


def test_every_setting_the_frontend_is_given_is_one_it_reads() -> None:
    read = {
        name for path in (ROOT / "frontend").rglob("*.py") for name in re.findall(r"IMAGEGEN_[A-Z_]+", path.read_text())
    }
    assert set(env(container("frontend"))) <= read


def test_no_secret_value_is_written_in_a_manifest() -> None:
    for path, document in resources():
        assert document["kind"] != "Secret", f"{path.name} holds a Secret"
    for name, spec in pod_specs():
        for each in spec["containers"]:
            for variable, entry in env(each).items():
                if SECRET_NAME.search(variable):
                    assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], f"{name}: {variable}"


def test_only_the_frontends_reach_triton_and_pods_run_restricted() -> None:
    policy = named("NetworkPolicy", "triton")
    frontend_labels = named("Deployment", "frontend")["spec"]["template"]["metadata"]["labels"]
    sources = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert sources and all(peer["podSelector"]["matchLabels"].items() <= frontend_labels.items() for peer in sources)
    assert "Egress" in policy["spec"]["policyTypes"] and not policy["spec"].get("egress")
    for name, spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for each in spec["containers"]:
            assert each["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert each["securityContext"]["capabilities"]["drop"] == ["ALL"], name


def test_the_autoscaler_and_disruption_budget_cover_the_frontends() -> None:
    autoscaler = named("HorizontalPodAutoscaler", "frontend")["spec"]
    assert autoscaler["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "frontend"}
    frontend_labels = named("Deployment", "frontend")["spec"]["template"]["metadata"]["labels"]
    budget = named("PodDisruptionBudget", "frontend")["spec"]
    assert budget["selector"]["matchLabels"].items() <= frontend_labels.items()
    ingress = named("Ingress", "imagegen")["spec"]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "frontend" and named("Service", "frontend")["spec"]["ports"][0]["name"] == "http"
