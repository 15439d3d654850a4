"""The Triton pool's addresses and its choice of server, against the session's real Triton: a server
that does not answer is never picked, an idle pool takes turns, a busy server is passed over, and a
server a call found unreachable is out until its next probe, one that answers probes late only after
several. (Failover between two real servers:
tests/e2e/test_pool.py.)"""

from __future__ import annotations

import asyncio

import pytest

from frontend.errors import InferenceUnavailable
from frontend.triton_pool import SLOW_PROBES, PoolAddress, TritonPool
from tests.harness import Server, embedded_triton_secret, embedded_triton_url, free_port, triton_paused

DENOISER = "flux-schnell_transformer"


def test_a_list_and_dns_names_are_parsed_and_anything_else_is_refused() -> None:
    address = PoolAddress.parse("gpu-a:8000, 10.0.0.7:8000,dns://triton-headless:8000")
    assert address == PoolAddress(("gpu-a:8000", "10.0.0.7:8000"), (("triton-headless", 8000),))
    for wrong in ("http://gpu-a:8000", "gpu-a", "gpu-a:port", "dns://:8000", "gpu-a:70000", ""):
        with pytest.raises(ValueError, match="is not host:port"):
            PoolAddress.parse(wrong)


def test_a_dns_name_stands_for_every_address_it_resolves_to() -> None:
    servers = asyncio.run(PoolAddress.parse("dns://localhost:8000,gpu-a:8001").resolve())
    assert servers is not None
    assert {"127.0.0.1:8000", "gpu-a:8001"} <= servers
    assert servers <= {"127.0.0.1:8000", "[::1]:8000", "gpu-a:8001"}


def test_requests_go_to_servers_that_answer_and_hold_the_version_the_least_busy_first(server: Server) -> None:
    live = embedded_triton_url(server)
    port = live.rsplit(":", 1)[1]
    dead = f"127.0.0.1:{free_port()}"
    # The same Triton under two names: two servers of the pool, both answering.
    twins = (live, f"localhost:{port}")

    async def scenario() -> None:
        pool = TritonPool(PoolAddress.parse(",".join([*twins, dead])), 10.0, embedded_triton_secret(server))
        try:
            await pool.refresh()
            assert [s.url for s in pool.reachable()] == sorted(twins)
            turns = []
            for _ in range(4):
                chosen = pool.pick([DENOISER], 1)
                with pool.serving(chosen):
                    turns.append(chosen.url)
            assert sorted(turns) == sorted([*twins, *twins])  # idle: each in turn
            busy = pool.pick([DENOISER], 1)
            with pool.serving(busy):
                assert pool.pick([DENOISER], 1) is not busy  # one in flight there: the other
            # A version no server holds as the probes saw it: one that answers, which then says so itself.
            assert pool.pick([DENOISER], 99).url in twins
            assert pool.servers[dead].reachable is False

            # A call that finds a server unreachable takes it out until it answers a probe again.
            failing = pool.pick([DENOISER], 1)
            with pytest.raises(InferenceUnavailable), pool.serving(failing):
                raise InferenceUnavailable("the connection dropped")
            assert [s.url for s in pool.reachable()] == [url for url in sorted(twins) if url != failing.url]
            await pool.refresh()
            assert [s.url for s in pool.reachable()] == sorted(twins)
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_with_no_server_answering_a_request_is_refused_at_once() -> None:
    async def scenario() -> None:
        pool = TritonPool(PoolAddress.parse(f"127.0.0.1:{free_port()}"), 10.0, None)
        try:
            await pool.refresh()
            with pytest.raises(InferenceUnavailable):
                pool.pick([DENOISER], 1)
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_a_server_that_answers_probes_late_stays_in_until_it_misses_several(server: Server) -> None:
    """A Triton loading models on busy cores answers its index late yet serves: one slow probe must not
    take it out (a rollout under load would then find no server); SLOW_PROBES in a row do."""

    async def scenario() -> None:
        pool = TritonPool(PoolAddress.parse(embedded_triton_url(server)), 10.0, embedded_triton_secret(server))
        try:
            await pool.refresh()
            (member,) = pool.servers.values()
            with triton_paused(server):  # every probe now times out
                for _ in range(SLOW_PROBES - 1):
                    await pool.refresh()
                    assert member.reachable
                await pool.refresh()
                assert not member.reachable
            await pool.refresh()
            assert member.reachable
        finally:
            await pool.close()

    asyncio.run(scenario())
