"""The Triton servers behind a frontend, as one pool: one TritonClient per server, which server a
request runs on, and which servers are taken out.

`IMAGEGEN_TRITON_URL` is a comma-separated list of entries, each either `host:port` (one server) or
`dns://name:port`: every address `name` resolves to, at `port`, re-resolved every probe. The second
is what a Kubernetes headless Service gives: one address per ready Triton pod.

Each server is probed every `PROBE_SECONDS` (its model index, within `PROBE_TIMEOUT_S`): a server
that answers is `reachable` and its ready versions are known. A request picks one server for all its
calls (`pick`: the fewest requests in flight among the reachable servers that hold the version it is
pinned to), so its steps stay in one dynamic batcher. A call that finds its server unreachable or
stalled (`InferenceUnavailable`) takes the server out at once, so the next requests go elsewhere; its
other requests in flight end with 503 as their own calls fail. The next probe it answers puts it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from collections.abc import Collection, Iterator, Mapping

from frontend.errors import InferenceFailed, InferenceUnavailable
from frontend.triton import NOT_AVAILABLE, PROBE_TIMEOUT_S, UNREACHABLE, TritonClient

log = logging.getLogger(__name__)

DNS_SCHEME = "dns://"
"""An entry `dns://name:port` stands for every address `name` resolves to (a headless Service)."""
PROBE_SECONDS = 1.0
"""How often each server is asked for its model index, and DNS names resolved again."""
SLOW_PROBES = 3
"""Probes in a row a server may answer late (or not within PROBE_TIMEOUT_S) before it is taken out."""
NO_SERVER = "No inference server can serve the request right now; retry later."


@dataclasses.dataclass(frozen=True)
class PoolAddress:
    """What `IMAGEGEN_TRITON_URL` names: servers by `host:port`, and names resolved to servers."""

    servers: tuple[str, ...]
    names: tuple[tuple[str, int], ...]
    """(name, port) of each `dns://` entry."""

    @classmethod
    def parse(cls, spec: str) -> PoolAddress:
        """ValueError naming the entry that is not `host:port` or `dns://name:port`."""
        servers: list[str] = []
        names: list[tuple[str, int]] = []
        for entry in (part.strip() for part in spec.split(",")):
            host, _, port = entry.removeprefix(DNS_SCHEME).rpartition(":")
            if not host or not port.isdigit() or "/" in host or not 0 < int(port) < 65536:
                raise ValueError(f"IMAGEGEN_TRITON_URL: {entry!r} is not host:port or {DNS_SCHEME}name:port")
            if entry.startswith(DNS_SCHEME):
                names.append((host, int(port)))
            else:
                servers.append(entry)
        return cls(tuple(servers), tuple(names))

    async def resolve(self) -> set[str] | None:
        """Every server's `host:port`; None when a name does not resolve now (the pool keeps its members)."""
        found = set(self.servers)
        loop = asyncio.get_running_loop()
        for name, port in self.names:
            try:
                answers = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                log.warning("Triton name %s does not resolve: %s", name, exc)
                return None
            for family, *_, address in answers:
                host = str(address[0])
                found.add(f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}")
        return found


def _slow(exc: InferenceUnavailable | TimeoutError) -> bool:
    """A probe that timed out, rather than one whose connection failed."""
    return isinstance(exc, TimeoutError) or exc.message != UNREACHABLE


class TritonServer:
    """One server of the pool: its client, what it serves, and what runs on it."""

    def __init__(self, url: str, client: TritonClient) -> None:
        self.url = url
        self.client = client
        self.reachable = False
        """Answered its last probe, and no call has failed on it since."""
        self.versions: dict[str, set[int]] = {}
        """Model -> its ready versions, as the last probe saw them."""
        self.in_flight = 0
        self.requests = 0
        self.errors = 0
        self._failures = 0
        self._slow_probes = 0
        self._probing = asyncio.Lock()
        """One probe at a time: a probe that began before a load ended must not have the last word."""

    def holds(self, models: Collection[str], version: int | None) -> bool:
        """Whether every model is ready on this server at `version` (None: at any version)."""
        return all(model in self.versions and (version is None or version in self.versions[model]) for model in models)

    async def probe(self) -> None:
        """Ask for the model index; reachable when it answers (unless a call failed meanwhile)."""
        async with self._probing:
            await self._probe()

    async def _probe(self) -> None:
        failures = self._failures
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                versions = await self.client.ready_versions()
        except (InferenceUnavailable, TimeoutError) as exc:
            # A refused connection takes the server out at once; a slow answer only after
            # SLOW_PROBES in a row: a Triton loading models on busy cores answers late but serves.
            self._slow_probes = self._slow_probes + 1 if _slow(exc) else SLOW_PROBES
            if self.reachable and self._slow_probes >= SLOW_PROBES:
                log.warning("Triton %s stopped answering; taken out of the pool", self.url)
                self.reachable = False
            return
        self._slow_probes = 0
        self.versions = versions
        if failures == self._failures and not self.reachable:
            log.info("Triton %s answers; in the pool, serving %s", self.url, self.describe())
            self.reachable = True

    def failed(self) -> None:
        """A call found it unreachable or stalled: no new request goes to it until it answers a probe."""
        self._failures += 1
        self.errors += 1
        if self.reachable:
            log.warning("Triton %s failed a request; taken out of the pool", self.url)
        self.reachable = False

    def serves(self, routed: Mapping[str, set[int]]) -> bool:
        """Whether it answers and holds every routed version of every model."""
        return self.reachable and all(self.holds([model], version) for model, vs in routed.items() for version in vs)

    def state(self, routed: Mapping[str, set[int]]) -> str:
        """`serving`, `degraded` (answers, but lacks a routed version) or `unreachable`."""
        return "serving" if self.serves(routed) else "degraded" if self.reachable else "unreachable"

    def describe(self) -> dict[str, list[int]]:
        return {model: sorted(versions) for model, versions in sorted(self.versions.items())}


class TritonPool:
    """The servers `IMAGEGEN_TRITON_URL` names, kept up to date by `watch` (or `refresh`)."""

    def __init__(self, address: PoolAddress, timeout: float, secret: str | None, shared_memory: bool = False) -> None:
        self.address = address
        self._client_settings = (timeout, secret, shared_memory)
        """Every server's client's: one secret for the pool's model control (TritonClient)."""
        self.servers: dict[str, TritonServer] = {}
        self._leaving: list[TritonServer] = []
        """Servers no longer named, closed once their requests in flight have ended."""
        self._refreshing = asyncio.Lock()

    async def refresh(self) -> None:
        """Resolve the names again (servers that joined or left), then probe every server."""
        async with self._refreshing:  # the watch and a rollout: one server object per address
            await self._refresh()

    async def _refresh(self) -> None:
        urls = await self.address.resolve()
        if urls is not None:
            for url in urls - self.servers.keys():
                log.info("Triton %s joins the pool", url)
                self.servers[url] = TritonServer(url, TritonClient(url, *self._client_settings))
            for url in self.servers.keys() - urls:
                log.info("Triton %s left the pool", url)
                self._leaving.append(self.servers.pop(url))
        await asyncio.gather(*(server.probe() for server in self.servers.values()))
        for server in [server for server in self._leaving if not server.in_flight]:
            self._leaving.remove(server)
            await server.client.close()

    async def watch(self) -> None:
        """Refresh every PROBE_SECONDS, for as long as the frontend runs."""
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            try:
                await self.refresh()
            except Exception:
                log.exception("probing the Triton servers failed; retrying in %g s", PROBE_SECONDS)

    def reachable(self) -> list[TritonServer]:
        return [server for server in self.ordered() if server.reachable]

    def ordered(self) -> list[TritonServer]:
        return [self.servers[url] for url in sorted(self.servers)]

    def known_models(self) -> set[str]:
        """Every model ready on some reachable server."""
        return {model for server in self.reachable() for model in server.versions}

    def pick(self, models: Collection[str], version: int | None = None) -> TritonServer:
        """The reachable server holding `models` at `version` with the fewest requests in flight (then
        the fewest served, so an idle pool still takes turns); InferenceUnavailable when none answers.

        When none holds them as the last probes saw it (a probe that caught a model mid-reload), any
        reachable server: Triton itself then serves the version or answers that it cannot."""
        reachable = self.reachable()
        if not reachable:
            raise InferenceUnavailable(NO_SERVER)
        candidates = [server for server in reachable if server.holds(models, version)] or reachable
        return min(candidates, key=lambda server: (server.in_flight, server.requests))

    def readiness(self, routed: Mapping[str, set[int]]) -> dict[str, int]:
        """How many servers serve every routed version, and how many do not (`/readyz`)."""
        serving = sum(server.serves(routed) for server in self.servers.values())
        return {"serving": serving, "degraded": len(self.servers) - serving}

    @contextlib.contextmanager
    def serving(self, server: TritonServer) -> Iterator[TritonClient]:
        """The server's client for one request's calls, counted in flight; a call that finds it
        unreachable takes it out."""
        server.in_flight += 1
        server.requests += 1
        try:
            yield server.client
        except InferenceUnavailable as exc:
            if exc.message == NOT_AVAILABLE:  # a model not ready there: the server itself answers
                server.errors += 1
            else:
                server.failed()
            raise
        except InferenceFailed:
            server.errors += 1
            raise
        finally:
            server.in_flight -= 1

    async def close(self) -> None:
        for server in [*self.servers.values(), *self._leaving]:
            await server.client.close()
