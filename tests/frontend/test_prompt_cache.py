"""The prompt-embedding cache: a prompt seen again on the same model version by the same caller never
reaches the text encoders; another version, another caller, or a client pinned to none, always does."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import numpy as np
import pytest
import tritonclient.http as triton_http

from frontend.accounting import InferenceClock
from frontend.errors import InferenceUnavailable
from frontend.pipelines.flux import FluxPipeline
from frontend.pipelines.prompt_cache import PromptCache
from frontend.triton import TritonClient
from tests.harness import Server, embedded_triton_secret, embedded_triton_url

ENCODERS = ("flux-schnell_text_encoder", "flux-schnell_text_encoder_2")
TENANT = "key_tenant"


def encoder_inferences(url: str) -> dict[str, int]:
    """Rows each text encoder has encoded since Triton started (its own statistics)."""
    client = triton_http.InferenceServerClient(url)
    return {
        name: sum(s["inference_count"] for s in client.get_inference_statistics(name)["model_stats"])
        for name in ENCODERS
    }


async def flux_schnell(url: str, secret: str) -> tuple[TritonClient, FluxPipeline]:
    triton = TritonClient(url, secret=secret)
    config = (await triton.model_configs())["flux-schnell_transformer"]
    metadata = json.loads(config["parameters"]["imagegen.pipeline"]["string_value"])
    return triton, FluxPipeline.from_metadata("flux-schnell", metadata, triton)


def test_same_prompt_and_version_encodes_once_and_another_version_misses(server: Server) -> None:
    url = embedded_triton_url(server)

    async def scenario() -> None:
        triton, pipeline = await flux_schnell(url, embedded_triton_secret(server))
        pinned = dataclasses.replace(pipeline, triton=triton.at_version(1))
        try:
            before = encoder_inferences(url)
            first = await pinned.encode_prompts(["a castle on a hill, cached"], TENANT, InferenceClock())
            after_first = encoder_inferences(url)
            second = await pinned.encode_prompts(["a castle on a hill, cached"], TENANT, InferenceClock())
            assert encoder_inferences(url) == after_first  # the second call never reached Triton
            assert all(after_first[name] == before[name] + 1 for name in ENCODERS)
            np.testing.assert_array_equal(second[0].prompt_embeds, first[0].prompt_embeds)
            np.testing.assert_array_equal(second[0].pooled, first[0].pooled)
            # Version 2 does not exist: only a miss asks Triton, which says so.
            other_version = dataclasses.replace(pinned, triton=triton.at_version(2))
            with pytest.raises(InferenceUnavailable):
                await other_version.encode_prompts(["a castle on a hill, cached"], TENANT, InferenceClock())
            # Unpinned (Triton picks the version at each call): never cached.
            await pipeline.encode_prompts(["a castle on a hill, cached"], TENANT, InferenceClock())
            await pipeline.encode_prompts(["a castle on a hill, cached"], TENANT, InferenceClock())
            assert all(encoder_inferences(url)[name] == after_first[name] + 2 for name in ENCODERS)
        finally:
            await triton.close()

    asyncio.run(scenario())


def test_rows_keep_the_prompts_order_and_the_least_recently_used_go_first() -> None:
    calls: list[list[str]] = []

    async def encoder(prompts: list[str]) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        calls.append(prompts)
        rows = np.array([[float(len(p))] * 4 for p in prompts], dtype=np.float32)  # 16 bytes a prompt
        return (rows,), np.array([[p.endswith("!")] for p in prompts])

    async def scenario() -> None:
        cache = PromptCache(max_bytes=32)  # two prompts
        (rows,), truncated = await cache.encode(TENANT, "m", "1", ["a", "bb!"], encoder)
        assert rows[:, 0].tolist() == [1, 3] and truncated
        (rows,), truncated = await cache.encode(TENANT, "m", "1", ["bb!", "ccc", "a"], encoder)
        assert rows[:, 0].tolist() == [3, 3, 1] and truncated
        assert calls == [["a", "bb!"], ["ccc"]]
        (rows,), _ = await cache.encode(TENANT, "m", "1", ["bb!"], encoder)  # evicted by "ccc": "a" was used last
        assert calls[-1] == ["bb!"]
        # One prompt's rows are the cache's own, unconcatenated: no caller can write into them.
        with pytest.raises(ValueError, match="read-only"):
            rows += 1

    asyncio.run(scenario())


def test_another_caller_never_reads_a_callers_rows() -> None:
    """A hit answers sooner: shared between tenants, it would confirm one tenant's prompt to another."""
    calls: list[list[str]] = []

    async def encoder(prompts: list[str]) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        calls.append(prompts)
        return (np.zeros((len(prompts), 4), dtype=np.float32),), np.zeros((len(prompts), 1), dtype=bool)

    async def scenario() -> None:
        cache = PromptCache()
        for caller in (TENANT, "key_other", TENANT):
            await cache.encode(caller, "m", "1", ["a secret prompt"], encoder)
        assert calls == [["a secret prompt"], ["a secret prompt"]]

    asyncio.run(scenario())
