"""Load for the tests that change what serves while requests run (rollouts, a Triton pool losing a
server): clients looping one request on each of some frontends until the block ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tests.e2e.images import AUTH
from tests.harness import Server


@dataclass(frozen=True)
class Answer:
    status: int
    version: str | None
    """`X-Model-Version`: the version that served it."""
    ended: float
    """time.monotonic() when it was answered."""


class Load:
    """`clients` clients per frontend, each looping `body` (with a seed of its own) until the block
    ends, recording every answer."""

    def __init__(self, servers: Sequence[Server], body: dict[str, Any], clients: int) -> None:
        self.body = body
        self.results: list[Answer] = []
        self._answered = threading.Condition()
        self._stop = threading.Event()
        self._clients = [
            threading.Thread(target=self._loop, args=(server, seed)) for server in servers for seed in range(clients)
        ]

    def _loop(self, server: Server, seed: int) -> None:
        with httpx.Client(headers=AUTH, timeout=120) as client:
            while not self._stop.is_set():
                response = client.post(f"{server.base_url}/images/generations", json={**self.body, "seed": seed})
                answer = Answer(response.status_code, response.headers.get("X-Model-Version"), time.monotonic())
                with self._answered:
                    self.results.append(answer)
                    self._answered.notify_all()

    def wait_for(self, more: int) -> None:
        """Until `more` further requests have been answered."""
        with self._answered:
            target = len(self.results) + more
            assert self._answered.wait_for(lambda: len(self.results) >= target, timeout=120)

    def __enter__(self) -> Load:
        for client in self._clients:
            client.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for client in self._clients:
            client.join()

    def statuses(self) -> set[int]:
        return {answer.status for answer in self.results}

    def versions(self) -> set[str | None]:
        return {answer.version for answer in self.results}
