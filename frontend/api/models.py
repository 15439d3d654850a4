"""`GET /v1/models`: the public ids a client may ask for, with their sizes and bounds."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from frontend.auth.scopes import MODELS_READ
from frontend.catalog import Catalog


async def list_models(request: Request) -> JSONResponse:
    state = request.app.state
    await state.auth.authorize(request, MODELS_READ)
    catalog: Catalog = state.catalog
    data = [describe_model(catalog, public_id, state.started) for public_id in catalog.public_ids()]
    return JSONResponse({"object": "list", "data": data})


def describe_model(catalog: Catalog, public_id: str, created: int) -> dict[str, Any]:
    pipeline = catalog.resolve(public_id)
    limits = {**asdict(pipeline.limits), "parameters": sorted(pipeline.limits.parameters)}
    return {
        "id": public_id,
        "object": "model",
        "created": created,
        "owned_by": "imagegen",
        "pipeline": pipeline.name,
        "limits": limits,
    }
