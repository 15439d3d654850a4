"""`/openapi.json` is true to the code: it documents every API route and the request model the route
parses, and fuzzing the server from it (schemathesis, a bounded number of cases) finds no 5xx.

The fuzzer reads the document from `frontend.api.openapi` (schemathesis' lazy loading from a fixture
does not run on pytest 9); the first test checks that the server serves exactly that document, and
that it is the reviewed one, `tests/e2e/snapshots/openapi.json`. A change to the API changes the
document on purpose: review it, then rewrite the snapshot with

    IMAGEGEN_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/e2e/test_openapi.py -k snapshot

and commit the snapshot's diff with the change."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from starlette.routing import Route

from frontend.api.openapi import document
from frontend.api.protocol import ImageRequest
from frontend.app import create_app
from frontend.settings import Settings
from tests.harness import API_KEY, Server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
FUZZ_CASES = 15
"""Per operation: eight operations, so about 120 requests, most refused by validation."""
SNAPSHOT = Path(__file__).parent / "snapshots" / "openapi.json"
UPDATE_SNAPSHOTS = os.environ.get("IMAGEGEN_UPDATE_SNAPSHOTS") == "1"


def assert_is_the_snapshot(served: dict[str, Any], snapshot: Path) -> None:
    """`served` equals the committed `snapshot`; with IMAGEGEN_UPDATE_SNAPSHOTS=1 it is written there first."""
    if UPDATE_SNAPSHOTS:
        snapshot.write_text(json.dumps(served, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    reviewed = json.loads(snapshot.read_text(encoding="utf-8"))
    assert served == reviewed, (
        f"the API's document changed: review it, then IMAGEGEN_UPDATE_SNAPSHOTS=1 rewrites {snapshot}"
    )


def test_the_document_is_served_without_credentials_and_is_the_reviewed_snapshot(guarded_server: Server) -> None:
    response = httpx.get(f"{guarded_server.root}/openapi.json")
    assert response.status_code == 200
    served = response.json()
    assert served == document()  # what the fuzzer below reads
    assert_is_the_snapshot(served, SNAPSHOT)
    expected = ImageRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    assert served["components"]["schemas"]["ImageRequest"] == expected
    body = served["paths"]["/v1/images/generations"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ImageRequest"}


def test_every_route_is_documented_with_its_methods(tmp_path: Path) -> None:
    app = create_app(Settings(state_dir=tmp_path), store=None, triton_url="127.0.0.1:1")  # type: ignore[arg-type]
    documented = {path: set(operations) for path, operations in document()["paths"].items()}
    # The Studio's page and the redirect to it are for browsers, not API clients.
    api = [r for r in app.routes if isinstance(r, Route) and r.path != "/"]
    assert {route.path: {m.lower() for m in route.methods or ()} - {"head"} for route in api} == documented


fuzzed = schemathesis.openapi.from_dict(document())


@fuzzed.parametrize()
@settings(max_examples=FUZZ_CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_fuzzing_finds_no_server_error(case: schemathesis.Case, guarded_server: Server) -> None:
    case.call_and_validate(base_url=guarded_server.root, headers=AUTH, checks=[not_a_server_error], timeout=60)
