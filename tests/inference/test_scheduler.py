"""The scheduler's `Retry-After`: the queue's depth over the recent completion rate, clamped to
[1, 60] seconds; pure functions first, then the estimate an overloaded engine really answers with."""

from __future__ import annotations

import asyncio
import time

import pytest

from inference import (
    Engine,
    EngineOverloadedError,
    EngineSettings,
    GenerationRequest,
    SamplingParams,
)
from inference.scheduler import (
    MAX_RETRY_AFTER_S,
    MIN_RETRY_AFTER_S,
    CompletionRate,
    retry_after,
)

from ..conftest import CACHE_DIR
from .contract.helpers import wait_until


def test_rate_counts_completions_in_the_window():
    rate = CompletionRate(window=60, start=0)
    for t in range(100, 120):  # 20 completions, one a second
        rate.record(t)
    assert rate.per_second(120) == pytest.approx(20 / 60)
    assert rate.per_second(165) == pytest.approx(14 / 60)  # 100-105 have left the window
    assert rate.per_second(500) == 0.0


def test_rate_of_a_young_server_is_over_its_age_not_the_whole_window():
    rate = CompletionRate(window=60, start=1000)
    for t in (1001, 1002, 1003, 1004):
        rate.record(t)
    assert rate.per_second(1004) == pytest.approx(1.0)
    assert CompletionRate(window=60, start=5).per_second(5) == 0.0


@pytest.mark.parametrize(("depth", "rate", "expected"), [
    (64, 64 / 90, 60),   # the case: 90 s of queue is more than the cap
    (30, 1.0, 30),
    (10, 4.0, 3),        # 2.5 s, rounded up
    (1, 100.0, MIN_RETRY_AFTER_S),
    (0, 2.0, MIN_RETRY_AFTER_S),
    (5, 0.0, MAX_RETRY_AFTER_S),  # nothing finished lately: the queue is not moving
])
def test_retry_after_is_queue_over_rate_clamped(depth, rate, expected):
    assert retry_after(depth, rate) == expected


async def test_an_overloaded_engine_answers_with_the_estimate(builtin_dir):
    engine = Engine(EngineSettings(model="builtin", cache_dir=CACHE_DIR, max_active_requests=1,
                                   max_queued_requests=1))
    await engine.start()
    scheduler = engine._scheduler
    now = time.monotonic()
    scheduler.finished_rate = CompletionRate(window=60, start=now - 3600)
    for i in range(30):  # 30 completions in the last minute: 0.5 per second
        scheduler.finished_rate.record(now - i)
    long = GenerationRequest(prompt="Once upon a time",
                             sampling=SamplingParams(max_tokens=100_000, top_k=0))
    try:
        running = engine.submit(long)
        assert await wait_until(lambda: engine.active_count == 1)
        queued = engine.submit(long)
        assert engine.queue_depth == 1
        with pytest.raises(EngineOverloadedError) as refused:
            engine.submit(long)
        assert refused.value.retry_after == 2  # 1 waiting / 0.5 per second
        running.cancel()
        queued.cancel()
        await asyncio.gather(running.collect(), queued.collect())
    finally:
        await engine.shutdown()
