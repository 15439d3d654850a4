"""The operator's API, under the `admin.models` scope: roll a pipeline's version out or back, reload
the catalog, and see what every frontend serves (`imagegen rollout|rollback|status|catalog-reload`)."""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from frontend.api.body_limits import parse_json
from frontend.auth.scopes import ADMIN_MODELS
from frontend.errors import AdminRefused, InvalidParameter
from frontend.rollout import Switch
from frontend.services import Services


class RolloutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, description="The version exported beside the current one (`imagegen export --version`)")
    canary_percent: float | None = Field(
        default=None, gt=0, lt=100, description="Send this share of requests to `version` until it is promoted"
    )


async def roll_out(request: Request) -> JSONResponse:
    """Load, warm up, switch to, drain to, and unload the old: answers when the rollout is finished."""
    services = Services.of(request)
    await services.auth.authorize(request, ADMIN_MODELS)
    body = parse_rollout(await request.body())
    switch = await services.rollouts.roll_out(request.path_params["model"], body.version, body.canary_percent)
    return switched(switch)


async def roll_back(request: Request) -> JSONResponse:
    """End a canary, else return to the previous stable version, the same way as a rollout."""
    services = Services.of(request)
    await services.auth.authorize(request, ADMIN_MODELS)
    return switched(await services.rollouts.roll_back(request.path_params["model"]))


async def status(request: Request) -> JSONResponse:
    """The routing table as every live frontend follows it, with its generations in flight per version,
    and each Triton server of the pool (as this frontend sees it) with the versions it holds."""
    services = Services.of(request)
    await services.auth.authorize(request, ADMIN_MODELS)
    frontends = [dataclasses.asdict(beat) for beat in await services.routing.live_frontends()]
    routed = services.routing.routed_models()
    servers = [
        {
            "server": server.url,
            "state": server.state(routed),
            "in_flight": server.in_flight,
            "models": server.describe(),
        }
        for server in services.pool.ordered()
    ]
    return JSONResponse({"frontends": frontends, "triton_servers": servers})


async def reload_catalog(request: Request) -> JSONResponse:
    """Read the catalog file and rediscover Triton's pipelines now (frontends also re-read a changed
    file within a second by themselves)."""
    services = Services.of(request)
    await services.auth.authorize(request, ADMIN_MODELS)
    try:
        catalog = await services.catalog_source.load()
    except ValueError as exc:
        raise AdminRefused(f"The catalog was not reloaded: {exc}") from None
    services.catalog = catalog
    return JSONResponse({"models": catalog.public_ids()})


def parse_rollout(body: bytes) -> RolloutRequest:
    try:
        return RolloutRequest.model_validate(parse_json(body or b"{}"))
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidParameter(f"{param}: {first['msg']}", param=param) from None


def switched(switch: Switch) -> JSONResponse:
    return JSONResponse(
        {"route": dataclasses.asdict(switch.route), "drained": switch.drained, "seconds": round(switch.seconds, 3)}
    )
