"""Which version of each pipeline this frontend serves, and the heartbeat that tells rollouts so.

The routing table lives in the store, one row per pipeline (`Route`: stable version, canary version
and percent, the previous version, a generation counter). Every frontend re-reads it each refresh
(`REFRESH_SECONDS`), follows it, and writes a heartbeat: the route it follows per pipeline and how
many generations run on each version. A rollout (rollout.py) waits on those heartbeats, so frontends
sharing one store converge within a refresh, whichever of them ran the rollout. A pipeline without
a row is served at the version the catalog found loaded in Triton.

Each request runs on one Triton server of the pool (triton_pool.py) that holds its version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from families.triton_models import model_name
from frontend.catalog import Catalog
from frontend.pipelines.pipeline import DiffusionPipeline
from frontend.store import Store
from frontend.store.heartbeats import Heartbeat
from frontend.store.routes import Route
from frontend.triton import TritonClient
from frontend.triton_pool import TritonPool

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0
"""How often a frontend re-reads the routing table and writes its heartbeat."""
STALE_SECONDS = 5 * REFRESH_SECONDS
"""A frontend not heard from for this long has stopped: rollouts no longer wait for it."""
VERSION_HEADER = "X-Model-Version"
"""Response header naming the version of the pipeline that made the images."""


def route_versions(route: Route) -> set[int]:
    """The versions a route sends requests to."""
    return {route.stable_version} | ({route.canary_version} if route.canary_version is not None else set())


def at_version(pipeline: DiffusionPipeline, triton: TritonClient, version: int) -> DiffusionPipeline:
    """`pipeline` with every Triton call it makes going to `triton` and naming `version`."""
    return dataclasses.replace(pipeline, triton=triton.at_version(version))


def component_models(pipeline: DiffusionPipeline, ready: Mapping[str, set[int]] | set[str]) -> list[str]:
    """The models of every component its family declares that Triton serves in some version: a rollout
    moves them together (a component an export left out, such as the VAE encoder, is skipped)."""
    models = [model_name(pipeline.name, component.name) for component in pipeline.family.components]
    return [name for name in models if name in ready]


def canary_bucket(pipeline: str, canary_version: int, caller: str) -> float:
    """Where `caller` falls in [0, 100) for a canary: a hash, so the same on every frontend and for
    every request. A caller stays on one side while the percent holds, a growing percent only moves
    callers onto the canary, and a new canary version deals the callers afresh."""
    digest = hashlib.sha256(f"{pipeline}\0{canary_version}\0{caller}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def in_flight_key(pipeline: str, version: int) -> str:
    return f"{pipeline}@{version}"


class Routing:
    """This frontend's copy of the routing table and its generations in flight per (pipeline, version)."""

    def __init__(self, store: Store, address: str, catalog: Callable[[], Catalog], pool: TritonPool) -> None:
        self.store = store
        self.pool = pool
        self.frontend = f"{socket.gethostname()}-{os.getpid()}-{random.randbytes(3).hex()}"
        self.address = address
        self.catalog = catalog
        """The current catalog: its `versions` are served where the table has no row."""
        self._routes: dict[str, Route] = {}
        self._in_flight: Counter[str] = Counter()

    def route(self, pipeline: str) -> Route:
        """The stored route, or one serving the discovered version (generation 0: never changed)."""
        return self._routes.get(pipeline) or Route(pipeline, self.catalog().versions.get(pipeline, 1))

    def choose(self, pipeline: str, caller: str) -> int:
        """The version that serves `caller` (a key or account, or one end user of it): sticky, so one
        caller's images, seeds included, come from one version for as long as a canary holds."""
        route = self.route(pipeline)
        canary = route.canary_version
        if canary is not None and canary_bucket(pipeline, canary, caller) < route.canary_percent:
            return canary
        return route.stable_version

    @contextlib.contextmanager
    def pinned(self, pipeline: DiffusionPipeline, caller: str) -> Iterator[tuple[DiffusionPipeline, int]]:
        """`pipeline` bound to `caller`'s version and to one Triton server holding it, for all its
        Triton calls, counted in flight while it runs (per version here, per server in the pool)."""
        version = self.choose(pipeline.name, caller)
        server = self.pool.pick(component_models(pipeline, self.pool.known_models()), version)
        key = in_flight_key(pipeline.name, version)
        self._in_flight[key] += 1
        try:
            with self.pool.serving(server) as triton:
                yield at_version(pipeline, triton, version), version
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]

    def serving(self) -> dict[str, dict[str, Any]]:
        """Pipeline -> the route followed, for every discovered or routed pipeline."""
        return {
            name: dataclasses.asdict(self.route(name)) for name in sorted({*self.catalog().versions, *self._routes})
        }

    def routed_models(self) -> dict[str, set[int]]:
        """Triton model -> the versions routes send requests to, for every served pipeline's components."""
        known = self.pool.known_models()
        return {
            model: route_versions(self.route(name))
            for name, pipeline in self.catalog().pipelines.items()
            for model in component_models(pipeline, known)
        }

    async def refresh(self) -> None:
        """Follow the stored routing table, then say so in this frontend's heartbeat."""
        self._routes = await self.store.routes.all()
        heartbeat = Heartbeat(self.frontend, self.address, self.serving(), dict(self._in_flight), time.time())
        await self.store.heartbeats.beat(heartbeat)

    async def live_frontends(self) -> list[Heartbeat]:
        return await self.store.heartbeats.since(time.time() - STALE_SECONDS)

    async def leave(self) -> None:
        """On shutdown: rollouts stop waiting for this frontend at once."""
        await self.store.heartbeats.forget(self.frontend)
