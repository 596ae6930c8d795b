"""Pacing of reply updates (ui/pacing.py): every chunk arrives once and in order, groups come at
most once per interval (on a clock the source drives), a final chunk is never held back, a chunk
is released when the stream stalls, and closing early closes the source."""

from __future__ import annotations

import asyncio

from ui.pacing import MAX_INTERVAL, MIN_INTERVAL, paced, update_interval


async def _collect(stream):
    return [group async for group in stream]


def test_the_interval_grows_with_the_reply_within_bounds():
    assert update_interval(0) == MIN_INTERVAL
    assert update_interval(10**9) == MAX_INTERVAL
    sizes = [0, 1_000, 5_000, 10_000, 20_000, 40_000]
    intervals = [update_interval(n) for n in sizes]
    assert intervals == sorted(intervals) and intervals[-1] > intervals[0]


async def test_chunks_come_in_groups_one_per_interval_on_the_sources_clock():
    now = [0]

    async def source():
        for i in range(20):
            now[0] = 10 * (i + 1)  # a chunk every 10 "ms"
            yield i

    groups = await _collect(paced(source(), lambda: 50, clock=lambda: now[0]))
    assert [chunk for group in groups for chunk in group] == list(range(20))
    assert groups[0] == [0]  # the first chunk is shown at once
    assert groups[1:-1] == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 13, 14, 15]]
    assert groups[-1] == [16, 17, 18, 19]  # what is left when the stream ends


async def test_a_final_chunk_is_sent_at_once():
    now = [0]

    async def source():
        for i in range(4):
            now[0] = i + 1
            yield i
        await asyncio.Event().wait()  # never ends by itself: only `ends` can release chunk 3

    groups = paced(source(), lambda: 50, ends=lambda chunk: chunk == 3, clock=lambda: now[0])
    assert await anext(groups) == [0]
    assert await asyncio.wait_for(anext(groups), 30) == [1, 2, 3]
    await groups.aclose()


async def test_a_waiting_chunk_is_released_when_the_stream_stalls():
    resume = asyncio.Event()

    async def source():
        yield "a"
        yield "b"  # right after "a": held for the interval
        await resume.wait()
        yield "c"

    groups = paced(source(), lambda: 0.05)
    assert await anext(groups) == ["a"]
    assert await asyncio.wait_for(anext(groups), 30) == ["b"]  # without waiting for "c"
    resume.set()
    assert [g async for g in groups] == [["c"]]


async def test_closing_between_groups_closes_the_source():
    closed = asyncio.Event()

    async def source():
        try:
            for i in range(100):
                yield i
        finally:
            closed.set()

    groups = paced(source(), lambda: 0.05)
    assert await anext(groups) == [0]
    await groups.aclose()
    assert closed.is_set()


async def test_closing_while_waiting_closes_the_source():
    closed = asyncio.Event()

    async def source():
        try:
            yield 1
            await asyncio.Event().wait()
            yield 2
        finally:
            closed.set()

    groups = paced(source(), lambda: 0.05)
    assert await anext(groups) == [1]
    pending = asyncio.ensure_future(anext(groups))
    await asyncio.sleep(0.01)  # the wait for chunk 2 has started
    pending.cancel()
    await asyncio.gather(pending, return_exceptions=True)
    await groups.aclose()
    assert closed.is_set()
