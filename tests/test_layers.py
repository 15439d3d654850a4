"""The import directions README's "Layout" draws, enforced on every module's imports.

api -> services -> pipelines -> Triton client, the errors and the request context at the bottom:
a lower layer never imports a higher one, so a pipeline can be read, run and tested without HTTP.
Imports under `if TYPE_CHECKING:` are left out: they name a type and load nothing.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("frontend", "export", "families", "backends", "benchmarks")
HTTP = ("starlette", "frontend.api", "frontend.app")
SERVICES = (
    "frontend.services",
    "frontend.accounting",
    "frontend.admission",
    "frontend.adapters",
    "frontend.catalog",
    "frontend.jobs",
    "frontend.progress",
    "frontend.rate_limits",
    "frontend.rollout",
    "frontend.routing",
    "frontend.safety",
    "frontend.store",
    "frontend.webhook_targets",
    "frontend.webhooks",
)
"""What the routes call (auth aside: it reads credentials off the request, so it may read starlette's
`Request`, and is a service in every other respect)."""


class RuntimeImports(ast.NodeVisitor):
    """The modules a file imports when it runs (a function's own imports included)."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.orelse:
                self.visit(statement)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [alias.name for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and not node.level:
            self.found += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]


def modules() -> Iterator[tuple[str, list[str]]]:
    """(module name, what it imports) for every module of our packages."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            visitor = RuntimeImports()
            visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
            yield name, visitor.found


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(f"{prefix}.") for prefix in prefixes)


def violations(importers: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{name} imports {imported}"
        for name, imported_names in modules()
        if within(name, importers)
        for imported in imported_names
        if within(imported, forbidden)
    ]


def test_the_errors_and_the_request_context_import_only_the_standard_library() -> None:
    bottom = ("frontend.errors", "frontend.request_context")
    found = [
        f"{name} imports {imported}"
        for name, imported_names in modules()
        if name in bottom
        for imported in imported_names
        if imported.split(".")[0] not in sys.stdlib_module_names | {"__future__"}
    ]
    assert found == []


def test_only_the_app_imports_the_api() -> None:
    """The routes, the protocol and the error-to-HTTP mapping are the top layer: the app wires them."""
    found = [
        line
        for line in violations(PACKAGES, ("frontend.api", "frontend.app"))
        if not within(line.split()[0], ("frontend.api", "frontend.app", "frontend.cli"))
    ]
    assert found == []


def test_services_import_no_http() -> None:
    assert violations(SERVICES, HTTP) == []


def test_the_pipelines_import_no_http_and_no_service() -> None:
    """But the three whose objects a generation is handed: the ledger's inference clock, the request's
    progress and the LoRA inputs of adapters.py."""
    handed = ("frontend.accounting", "frontend.progress", "frontend.adapters")
    forbidden = tuple(name for name in (*HTTP, *SERVICES, "frontend.auth") if name not in handed)
    assert violations(("frontend.pipelines",), forbidden) == []


def test_the_triton_client_imports_only_the_errors_the_request_context_and_shared_memory() -> None:
    allowed = ("frontend.errors", "frontend.request_context", "frontend.shared_memory")
    found = [line for line in violations(("frontend.triton",), ("frontend",)) if not within(line.split()[-1], allowed)]
    assert found == []


def test_the_triton_pool_imports_only_the_client_and_the_errors() -> None:
    allowed = ("frontend.triton", "frontend.errors")
    found = [
        line for line in violations(("frontend.triton_pool",), ("frontend",)) if not within(line.split()[-1], allowed)
    ]
    assert found == []


def test_the_exporter_imports_nothing_of_the_serving_side() -> None:
    """What both sides need (component names, packing, size bounds) comes from `families`."""
    serving = ("frontend.api", "frontend.app", "frontend.services", "frontend.store", "frontend.triton")
    assert violations(("export",), (*serving, "frontend.pipelines")) == []


def test_the_family_declarations_import_neither_side() -> None:
    assert violations(("families",), ("frontend", "export")) == []


def test_importing_a_pipeline_loads_no_starlette() -> None:
    """What the modules' own imports imply, checked as Python loads them (an `__init__` included)."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, frontend.pipelines.flux; print(sorted(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("'")
    assert not [name for name in loaded if within(name, HTTP)]
