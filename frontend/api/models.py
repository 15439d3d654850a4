"""`GET /v1/models`: the public ids a client may ask for, with their sizes and bounds."""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import JSONResponse

from frontend.auth import authenticate


async def list_models(request: Request) -> JSONResponse:
    state = request.app.state
    authenticate(request, state.api_key)
    catalog = state.catalog
    data = [
        {
            "id": public_id,
            "object": "model",
            "created": state.started,
            "owned_by": "imagegen",
            "pipeline": catalog.resolve(public_id).name,
            "limits": {**asdict(limits := catalog.resolve(public_id).limits), "parameters": sorted(limits.parameters)},
        }
        for public_id in catalog.public_ids()
    ]
    return JSONResponse({"object": "list", "data": data})
