"""A long prompt does not stall everyone: it prefills in chunks beside the other requests, and
cancelling it frees the engine within a chunk (the built-in model on the CPU)."""

from __future__ import annotations

import asyncio
import random
import time

from inference import GenerationRequest, SamplingParams

from .test_engine import blocks_used

LONG = 32_768


def long_request(max_tokens: int = 4, seed: int = 7) -> GenerationRequest:
    """A 32K-token prompt; a `seed` of its own keeps it out of another test's prefix cache."""
    rng = random.Random(seed)
    ids = [rng.randrange(1000, 100_000) for _ in range(LONG)]
    return GenerationRequest(prompt_token_ids=ids,
                             sampling=SamplingParams(max_tokens=max_tokens, temperature=0))


def short_request() -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": "Hi"}],
                             sampling=SamplingParams(max_tokens=2, temperature=0))


async def read_all(stream) -> tuple[float, object]:
    """When the stream's first chunk came, and its last chunk."""
    first = last = None
    async for chunk in stream:
        first = first or time.perf_counter()
        last = chunk
    assert last is not None, "no chunk"
    return first, last


async def prefilling(engine, idle: int) -> None:
    """Wait until the long prompt holds cache blocks: its prefill has started."""
    for _ in range(500):
        if engine.info()["kv_cache"]["blocks_used"] > idle:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the long prompt never started")


async def test_a_short_request_is_served_while_a_32k_prompt_prefills(builtin_engine):
    idle = builtin_engine.info()["kv_cache"]["blocks_used"]
    long = await builtin_engine.asubmit(long_request())
    await prefilling(builtin_engine, idle)
    long_read = asyncio.create_task(read_all(long))
    short_first, _ = await read_all(await builtin_engine.asubmit(short_request()))
    long_first, long_last = await long_read  # the long one still completes
    # The order, not a time: the short request's first token comes before the long prompt's.
    assert short_first < long_first, "the short request waited for the whole prefill"
    assert long_last.finish_reason == "length" and long_last.usage.prompt_tokens == LONG


async def test_cancelling_a_prefill_frees_the_engine(builtin_engine):
    idle = builtin_engine.info()["kv_cache"]["blocks_used"]
    long = await builtin_engine.asubmit(long_request(seed=8))
    await prefilling(builtin_engine, idle)
    long.cancel()
    assert await blocks_used(builtin_engine, idle) == idle
    result = await long.collect()
    assert result.finish_reason == "cancelled" and not result.token_ids  # ended during prefill
