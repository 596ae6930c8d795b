"""The scheduler: its `Retry-After` (the queue's depth over the recent completion rate, clamped to
[1, 60] seconds; pure functions first, then the estimate an overloaded engine really answers with),
prompt chunks beside running streams, and the log line for a slow GPU step."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

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


class _Budget:
    """What the scheduler reads from its runner when deciding steps: the token budget, the device,
    whether steps overlap."""

    max_batched_tokens = 64
    device = torch.device("cpu")
    async_scheduling = False


def test_a_prompt_beside_running_streams_gets_smaller_chunks_as_its_context_grows(
        builtin_tokenizer):
    from inference.block_manager import BlockManager
    from inference.detokenizer import IncrementalDetokenizer
    from inference.scheduler import Scheduler
    from inference.sequence import Sequence

    def sequence(name: str, length: int) -> Sequence:
        return Sequence(name, list(range(100, 100 + length)), SamplingParams(max_tokens=10), set(),
                        IncrementalDetokenizer(builtin_tokenizer), lambda chunk: None)

    scheduler = Scheduler(_Budget(), BlockManager(512, 16, False), 8, 8)
    assert scheduler.chunk_cost == 4 * 64 * 64

    def step() -> dict[str, int]:
        with scheduler._wake:
            batch = scheduler.schedule()
        for seq, n in batch:
            seq.num_computed += n
            if seq.num_computed == len(seq.token_ids):
                seq.token_ids.append(7)  # its next token, sampled
        return {seq.request_id: n for seq, n in batch}

    stream, prompt = sequence("stream", 10), sequence("prompt", 3000)
    scheduler.add(stream)
    assert step() == {"stream": 10}
    scheduler.add(prompt)
    assert step() == {"stream": 1, "prompt": 63}  # admitted with the budget the stream left
    while prompt.num_computed < 1200:
        context = prompt.num_computed
        chunk = step()["prompt"]
        assert chunk == min(63, max(16, scheduler.chunk_cost // context // 16 * 16))
    assert chunk == 16  # 16,384 / 1,200 rounds down to the smallest chunk, a block
    scheduler.running.remove(stream)  # the stream ends: the prompt has the whole budget again
    assert step() == {"prompt": 64}


def test_a_slow_step_is_logged_with_what_it_held_at_most_once_a_second(builtin_tokenizer, caplog):
    from inference.block_manager import BlockManager
    from inference.detokenizer import IncrementalDetokenizer
    from inference.scheduler import Scheduler
    from inference.sequence import Sequence

    def sequence(name: str, length: int, computed: int) -> Sequence:
        seq = Sequence(name, list(range(100, 100 + length)), SamplingParams(max_tokens=10), set(),
                       IncrementalDetokenizer(builtin_tokenizer), lambda chunk: None)
        seq.num_computed = computed
        return seq

    scheduler = Scheduler(_Budget(), BlockManager(512, 16, False), 8, 8)
    assert scheduler.slow_step_s is None  # a CPU runner: no log lines
    scheduler.slow_step_s = 0.2
    step = [(sequence("a", 40, 39), 1), (sequence("b", 12, 11), 1), (sequence("c", 900, 400), 63)]
    with caplog.at_level("INFO", logger="inference.scheduler"):
        scheduler._log_if_slow(step, 0.05)  # fast: nothing
        scheduler._log_if_slow(step, 0.31)
        scheduler._log_if_slow(step, 0.5)  # within the second: not again
        scheduler._slow_logged_at -= 1
        scheduler._log_if_slow(step, 0.46, queued=15)  # the last of a prefill's chunks
    lines = [r.getMessage() for r in caplog.records if r.name == "inference.scheduler"]
    assert lines == ["Slow step: 310 ms for 2 decodes and 63 prompt tokens in 1 chunks "
                     "(longest context 463 tokens)",
                     "Slow step: 460 ms for 2 decodes and 63 prompt tokens in 1 chunks "
                     "(longest context 463 tokens), waiting for 15 earlier steps queued on the "
                     "device"]
