"""`GET /v1/models`: the public ids a client may ask for, with their sizes and bounds."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from frontend.api.parameters import DEFAULT_LORA_SCALE
from frontend.api.protocol import MAX_ADAPTERS, MAX_LORA_SCALE, MIN_LORA_SCALE
from frontend.auth.scopes import MODELS_READ
from frontend.catalog import Catalog
from frontend.services import Services
from frontend.store.adapters import LoraAdapter


async def list_models(request: Request) -> JSONResponse:
    services = Services.of(request)
    await services.auth.authorize(request, MODELS_READ)
    catalog: Catalog = services.catalog
    adapters = await services.adapters.store.adapters.find()
    data = [describe_model(catalog, public_id, services.started, adapters) for public_id in catalog.public_ids()]
    return JSONResponse({"object": "list", "data": data})


def describe_model(catalog: Catalog, public_id: str, created: int, adapters: list[LoraAdapter]) -> dict[str, Any]:
    pipeline = catalog.resolve(public_id)
    limits = {**asdict(pipeline.limits), "parameters": sorted(pipeline.limits.parameters)}
    if pipeline.lora is not None:
        limits["lora"] = {
            "rank_budget": pipeline.lora.rank,
            "max_adapters": MAX_ADAPTERS,
            "scale": [MIN_LORA_SCALE, MAX_LORA_SCALE],
            "default_scale": DEFAULT_LORA_SCALE,
        }
    return {
        "id": public_id,
        "object": "model",
        "created": created,
        "owned_by": "imagegen",
        "pipeline": pipeline.name,
        "limits": limits,
        "lora_adapters": [
            {"name": adapter.name, "rank": adapter.rank} for adapter in adapters if adapter.model == pipeline.name
        ],
    }
