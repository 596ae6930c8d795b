"""Interleaving, without a browser: a short request submitted while a long one streams finishes
first, and the long one keeps streaming; cancelling frees the request (seen through `info()` and
`health()`), and leaving a stream's loop early cancels it."""

from __future__ import annotations

import asyncio

from .helpers import BanTokens, chat, req, stop_token_ids, wait_until

LONG = 400


async def test_a_short_request_finishes_while_a_long_one_streams(builtin_engine):
    no_stop = BanTokens(stop_token_ids(builtin_engine))
    long = await builtin_engine.asubmit(req(LONG, messages=chat("A long answer, please."),
                                            temperature=0.8, seed=1, logits_processors=[no_stop]))
    long_chunks = []
    first = asyncio.Event()

    async def read_long():
        async for chunk in long:
            long_chunks.append(chunk)
            first.set()

    reader = asyncio.create_task(read_long())
    try:
        await asyncio.wait_for(first.wait(), 60)
        short = builtin_engine.submit(req(4, messages=chat("Short."), temperature=0))
        seen_at_short_end = None
        async for chunk in short:
            if chunk.finish_reason is not None:
                finished = any(c.finish_reason for c in long_chunks)
                seen_at_short_end = (finished, sum(len(c.token_ids) for c in long_chunks))
        assert chunk.finish_reason == "length" and chunk.usage.completion_tokens == 4
        long_finished, long_tokens = seen_at_short_end
        assert not long_finished, "the long request ended before the short one"
        assert 0 < long_tokens < LONG
        # The long one is still streaming: more of it arrives after the short one's end.
        await asyncio.wait_for(wait_until(
            lambda: sum(len(c.token_ids) for c in long_chunks) > long_tokens, timeout=60), 61)
        assert sum(len(c.token_ids) for c in long_chunks) > long_tokens
    finally:
        long.cancel()
        await asyncio.wait_for(reader, 60)
    assert long_chunks[-1].finish_reason == "cancelled"
    assert long_chunks[-1].usage.completion_tokens < LONG


async def test_cancel_ends_the_stream_and_frees_the_request(builtin_engine):
    before = builtin_engine.info()["counters"]
    stream = builtin_engine.submit(req(100_000, temperature=0.8, seed=2))
    async for chunk in stream:
        if chunk.finish_reason is None and builtin_engine.info()["counters"]["active_requests"]:
            stream.cancel()
    assert chunk.finish_reason == "cancelled"
    assert chunk.usage.completion_tokens < 1000
    assert await wait_until(lambda: builtin_engine.info()["counters"]["active_requests"] == 0)
    assert builtin_engine.health()["active_requests"] == 0
    after = builtin_engine.info()["counters"]
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["queue_depth"] == 0


async def test_leaving_the_loop_early_cancels_the_request(builtin_engine):
    before = builtin_engine.info()["counters"]["cancelled"]
    stream = await builtin_engine.asubmit(req(100_000, temperature=0.8, seed=3))
    async for _ in stream:
        break
    assert await wait_until(lambda: builtin_engine.info()["counters"]["active_requests"] == 0)
    assert await wait_until(lambda: builtin_engine.info()["counters"]["cancelled"] == before + 1)
