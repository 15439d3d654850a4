"""Rollouts and rollbacks of a pipeline's version: load, warm up, switch, drain, unload.

A switch, whatever asks for it (`imagegen rollout`, a canary, its promotion, `imagegen rollback`):
1. load the versions the new route needs beside those serving now, in every component of the
   pipeline, on every reachable Triton server of the pool (Triton's explicit model control, a
   version policy naming exactly those versions); one server that cannot refuses the switch;
2. warm each new version up on every server: one small generation through every component on that
   version, so a version that does not load or run is refused before any client sees it;
3. write the new route to the store (compare-and-set on its generation): every frontend follows it
   within a refresh, and a request keeps the version it started on (routing.py pins it);
4. drain: wait until every live frontend follows the new route and runs nothing on a retired
   version, for at most the request timeout (no request runs longer), plus two refreshes;
5. unload the retired versions, on every server.

A server that joins the pool later (scale-up, a restart) is brought to the routed versions by
`reconcile` before requests pinned to them go there (the pool picks servers holding the version).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable

import numpy as np

from frontend.catalog import Catalog
from frontend.errors import AdminConflict, AdminRefused, APIError, ModelNotFound
from frontend.pipelines.job import GenerationJob
from frontend.pipelines.pipeline import DiffusionPipeline
from frontend.progress import Progress
from frontend.routing import REFRESH_SECONDS, Routing, at_version, component_models, in_flight_key, route_versions
from frontend.store.routes import Route
from frontend.triton_pool import TritonPool, TritonServer

log = logging.getLogger(__name__)

DRAIN_POLL_SECONDS = 0.1


@dataclasses.dataclass(frozen=True)
class Switch:
    route: Route
    drained: bool
    """False when a frontend still ran requests on a retired version at the drain deadline."""
    seconds: float


class Rollouts:
    def __init__(
        self, pool: TritonPool, routing: Routing, catalog: Callable[[], Catalog], request_timeout: float
    ) -> None:
        self.pool = pool
        self.routing = routing
        self.catalog = catalog
        self.drain_timeout = request_timeout + 2 * REFRESH_SECONDS
        self._busy: set[str] = set()

    async def roll_out(self, model: str, version: int, canary_percent: float | None) -> Switch:
        """Serve `version` of `model` to every request, or to `canary_percent` of them beside the stable one."""
        async with self._exclusive(model) as pipeline:
            route = await self._stored_route(model)
            if canary_percent is None:
                if version == route.stable_version and route.canary_version is None:
                    raise AdminConflict(f"{model} already serves version {version} to every request.")
                previous = route.stable_version if version != route.stable_version else route.previous_version
                new = Route(model, version, previous, None, 0.0, route.generation + 1)
            else:
                if version == route.stable_version:
                    raise AdminConflict(f"Version {version} is {model}'s stable version, not a canary.")
                new = dataclasses.replace(
                    route, canary_version=version, canary_percent=canary_percent, generation=route.generation + 1
                )
            return await self._switch(pipeline, route, new)

    async def roll_back(self, model: str) -> Switch:
        """End a canary, or else return to the previous stable version."""
        async with self._exclusive(model) as pipeline:
            route = await self._stored_route(model)
            if route.canary_version is not None:
                new = dataclasses.replace(route, canary_version=None, canary_percent=0.0)
            elif route.previous_version is not None:
                new = Route(model, route.previous_version, route.stable_version)
            else:
                raise AdminConflict(f"{model} has no previous version to roll back to.")
            return await self._switch(pipeline, route, dataclasses.replace(new, generation=route.generation + 1))

    async def reconcile(self) -> None:
        """Load the routed versions each server lacks, beside what it serves: a restarted or new Triton
        loads only each model's latest version, which may not be the one routed (after a rollback, say)."""
        for server in self.pool.reachable():
            ready = server.versions
            loads = []
            for name, pipeline in self.catalog().pipelines.items():
                wanted = route_versions(self.routing.route(name))
                missing = [model for model in component_models(pipeline, ready) if not wanted <= ready[model]]
                if missing and name not in self._busy:
                    log.warning(
                        "%s: Triton %s lacks routed versions %s; loading them", name, server.url, sorted(wanted)
                    )
                    loads += [server.client.load_versions(model, ready[model] | wanted) for model in missing]
            if loads:
                await asyncio.gather(*loads)
                await server.probe()

    @contextlib.asynccontextmanager
    async def _exclusive(self, model: str) -> AsyncIterator[DiffusionPipeline]:
        """The pipeline, while no other switch of it runs in this frontend (the store's compare-and-set
        refuses one from another frontend)."""
        pipeline = self.catalog().pipelines.get(model)
        if pipeline is None:
            raise ModelNotFound(f"No pipeline `{model}` is served; `imagegen status` lists them.", param="model")
        if model in self._busy:
            raise AdminConflict(f"A rollout of {model} is already under way.")
        self._busy.add(model)
        try:
            yield pipeline
        finally:
            self._busy.discard(model)

    async def _stored_route(self, model: str) -> Route:
        """The model's row in the routing table, first written (generation 1) when it has none, so a
        frontend starting while two versions are loaded serves the right one."""
        await self.routing.refresh()
        route = self.routing.route(model)
        if route.generation == 0:
            route = dataclasses.replace(route, generation=1)
            if not await self.routing.store.routes.replace(route):
                raise AdminConflict(f"The routing table of {model} changed meanwhile; try again.")
        return route

    async def _switch(self, pipeline: DiffusionPipeline, route: Route, new: Route) -> Switch:
        started = time.monotonic()
        await self.pool.refresh()
        servers = self.pool.reachable()
        if not servers:
            raise AdminRefused("No Triton server of the pool answers; nothing was switched.")
        models = component_models(pipeline, self.pool.known_models())
        before, after = route_versions(route), route_versions(new)
        added = after - before
        if added:
            await self._load(servers, models, before | after, keep=before)
            warm_ups = [self._warm_up(server, pipeline, version) for server in servers for version in sorted(added)]
            # All ended before a failure unloads the versions they run on.
            refused = [error for error in await asyncio.gather(*warm_ups, return_exceptions=True) if error]
            if refused:
                await self._serve_exactly(servers, models, before)
                raise refused[0]
        if not await self.routing.store.routes.replace(new):
            raise AdminConflict(f"The routing table of {pipeline.name} changed meanwhile; try again.")
        log.info("%s: route generation %d serves %s", pipeline.name, new.generation, sorted(after))
        drained = await self._drain(new, retired=before - after)
        await self._load(servers, models, after, keep=after)
        return Switch(new, drained, time.monotonic() - started)

    async def _load(self, servers: list[TritonServer], models: list[str], versions: set[int], keep: set[int]) -> None:
        """Every component at exactly `versions` on every server; on a failure, back to `keep` and refused."""
        try:
            await self._serve_exactly(servers, models, versions)
        except APIError as exc:
            await self._serve_exactly(servers, models, keep)
            raise AdminRefused(f"Triton could not load versions {sorted(versions)}: {exc.message}") from None

    async def _serve_exactly(self, servers: list[TritonServer], models: list[str], versions: set[int]) -> None:
        """Then each server's versions are probed again, so requests see at once where a version is."""
        try:
            await asyncio.gather(
                *(server.client.load_versions(model, versions) for server in servers for model in models)
            )
        finally:
            await asyncio.gather(*(server.probe() for server in servers))

    async def _warm_up(self, server: TritonServer, pipeline: DiffusionPipeline, version: int) -> None:
        """One small generation through every component on `version`, on `server`."""
        bound = at_version(pipeline, server.client, version)
        limits = pipeline.limits
        side = max(limits.min_side, limits.side_multiple)
        img2img = "input_images" in limits.parameters
        job = GenerationJob(
            prompt="warm-up",
            width=side,
            height=side,
            steps=1,
            seeds=[0],
            guidance=limits.default_guidance,
            init_images=np.full((1, 3, side, side), 0.5, dtype=np.float32) if img2img else None,
            strength=1.0,
        )
        try:
            await bound.generate(job, Progress())
        except APIError as exc:
            raise AdminRefused(
                f"Version {version} of {pipeline.name} failed its warm-up on {server.url}: {exc.message}"
            ) from None

    async def _drain(self, new: Route, retired: set[int]) -> bool:
        """Wait until every live frontend follows `new` and runs nothing on a retired version."""
        deadline = time.monotonic() + self.drain_timeout
        retired_keys = [in_flight_key(new.model, version) for version in retired]
        while True:
            await self.routing.refresh()
            waiting = [
                beat.address
                for beat in await self.routing.live_frontends()
                if beat.serving.get(new.model, {}).get("generation", 0) < new.generation
                or any(beat.in_flight.get(key, 0) for key in retired_keys)
            ]
            if not waiting:
                return True
            if time.monotonic() > deadline:
                log.warning("%s: %s still on a retired version after the drain timeout", new.model, waiting)
                return False
            await asyncio.sleep(DRAIN_POLL_SECONDS)
