"""The paged KV cache, seen through `engine.info()["kv_cache"]`: its shape, blocks held only by live
requests (they grow while a request streams and come back after it completes or is cancelled), and
the prefix cache's counters.

Written against the batching engine's specification (`block_size`, `capacity_tokens`,
`blocks_total`, `blocks_used`, `blocks_free`, `preemptions`, `prefix_caching`,
`prefix_cache_hit_rate`, `prefix_cache_hit_tokens`, `prefix_cache_query_tokens`); an engine
without a `kv_cache` report fails here by design.
"""

from __future__ import annotations

import asyncio

import pytest

from .helpers import BanTokens, chat, req, stop_token_ids, wait_until

KEYS = {"block_size", "capacity_tokens", "blocks_total", "blocks_used", "blocks_free",
        "preemptions", "prefix_caching", "prefix_cache_hit_rate", "prefix_cache_hit_tokens",
        "prefix_cache_query_tokens"}


class Reader:
    """Consumes a stream in a task (so that the request stays live and read), noting its start."""

    def __init__(self, stream):
        self.chunks = []
        self.started = asyncio.Event()
        self.task = asyncio.create_task(self._read(stream))

    async def _read(self, stream):
        async for chunk in stream:
            self.chunks.append(chunk)
            self.started.set()


def kv(engine) -> dict:
    return engine.info()["kv_cache"]


def active(engine) -> int:
    return engine.info()["counters"]["active_requests"]


async def idle_blocks(engine) -> int:
    """`blocks_used` with no live request (earlier tests' requests are all gone)."""
    assert await wait_until(lambda: active(engine) == 0)
    return kv(engine)["blocks_used"]


def test_kv_cache_report_shape(builtin_engine):
    report = kv(builtin_engine)
    assert KEYS <= set(report), KEYS - set(report)
    for key in KEYS - {"prefix_caching", "prefix_cache_hit_rate"}:
        assert isinstance(report[key], int) and report[key] >= 0, (key, report[key])
    assert isinstance(report["prefix_caching"], bool)
    assert isinstance(report["prefix_cache_hit_rate"], float)
    assert 0.0 <= report["prefix_cache_hit_rate"] <= 1.0
    assert report["block_size"] >= 1
    assert report["blocks_total"] == report["blocks_used"] + report["blocks_free"]
    assert report["capacity_tokens"] == report["blocks_total"] * report["block_size"]
    assert report["prefix_cache_hit_tokens"] <= report["prefix_cache_query_tokens"]


async def test_blocks_grow_while_streaming_and_come_back_on_cancel(builtin_engine):
    idle = await idle_blocks(builtin_engine)
    block = kv(builtin_engine)["block_size"]
    no_stop = BanTokens(stop_token_ids(builtin_engine))
    stream = await builtin_engine.asubmit(req(max(400, 6 * block), messages=chat("Go on."),
                                              temperature=0.8, seed=7,
                                              logits_processors=[no_stop]))
    generated, first_used, later_used = 0, None, None
    async for chunk in stream:
        generated += len(chunk.token_ids)
        if chunk.finish_reason is not None:
            break
        if first_used is None:
            first_used, first_at = kv(builtin_engine)["blocks_used"], generated
            assert first_used > idle  # the live request holds its prompt's blocks
        elif later_used is None and generated >= first_at + 2 * block + 1:
            later_used = kv(builtin_engine)["blocks_used"]
            stream.cancel()
    assert chunk.finish_reason == "cancelled"
    assert later_used is not None and later_used > first_used  # 2 blocks' worth more tokens
    assert await wait_until(lambda: kv(builtin_engine)["blocks_used"] == idle), kv(builtin_engine)
    assert active(builtin_engine) == 0


async def test_blocks_come_back_after_completion(builtin_engine):
    idle = await idle_blocks(builtin_engine)
    block = kv(builtin_engine)["block_size"]
    result = await builtin_engine.generate(req(2 * block + 3, messages=chat("Complete this."),
                                               temperature=0))
    assert result.finish_reason in ("length", "stop")
    assert await wait_until(lambda: kv(builtin_engine)["blocks_used"] == idle), kv(builtin_engine)
    assert active(builtin_engine) == 0


async def test_concurrent_requests_hold_blocks_until_each_ends(builtin_engine):
    idle = await idle_blocks(builtin_engine)
    no_stop = BanTokens(stop_token_ids(builtin_engine))
    streams = [await builtin_engine.asubmit(req(400, messages=chat(f"Stream {i}."), seed=i,
                                                temperature=0.8, logits_processors=[no_stop]))
               for i in range(3)]
    readers = [Reader(stream) for stream in streams]
    for reader in readers:
        await asyncio.wait_for(reader.started.wait(), 60)  # each has started, none has ended
    held = kv(builtin_engine)["blocks_used"]
    assert held >= idle + 3  # three live requests, one block at least each
    for stream in streams:
        stream.cancel()
    await asyncio.wait_for(asyncio.gather(*(r.task for r in readers)), 60)
    assert all(r.chunks[-1].finish_reason == "cancelled" for r in readers)
    assert await wait_until(lambda: kv(builtin_engine)["blocks_used"] == idle), kv(builtin_engine)


async def test_prefix_cache_counts_a_repeated_prompt(builtin_engine):
    report = kv(builtin_engine)
    if not report["prefix_caching"]:
        pytest.skip("prefix caching is off in this engine")
    block = report["block_size"]
    content = "A long shared system prompt that repeats. " * (block // 2 + 4)
    messages = [{"role": "system", "content": content}, {"role": "user", "content": "Hi."}]
    first = await builtin_engine.asubmit(req(2, messages=messages, temperature=0))
    assert first.prompt_tokens >= 3 * block
    await first.collect()
    before = kv(builtin_engine)
    again = await builtin_engine.asubmit(req(2, messages=messages, temperature=0))
    await again.collect()
    after = kv(builtin_engine)
    assert after["prefix_cache_query_tokens"] - before["prefix_cache_query_tokens"] >= (
        again.prompt_tokens)
    hit = after["prefix_cache_hit_tokens"] - before["prefix_cache_hit_tokens"]
    assert hit >= 2 * block and hit < again.prompt_tokens  # the last token is always computed
    rate = after["prefix_cache_hit_tokens"] / after["prefix_cache_query_tokens"]
    assert after["prefix_cache_hit_rate"] == pytest.approx(rate, abs=1e-3)
