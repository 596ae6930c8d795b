"""The engine on the built-in model through the real NF4 path: determinism, seeds, limits, stop
strings, streaming, cancellation, concurrency and the context window."""

from __future__ import annotations

import asyncio
import gc

import pytest
import torch

from inference import (
    ContextLengthError,
    Engine,
    EngineOverloadedError,
    EngineSettings,
    GenerationRequest,
    SamplingParams,
)
from inference.engine import gc_paused

from ..conftest import CACHE_DIR

CHAT = [{"role": "user", "content": "Tell me a story."}]


def req(max_tokens=16, messages=CHAT, **sampling) -> GenerationRequest:
    return GenerationRequest(messages=messages, sampling=SamplingParams(max_tokens=max_tokens, **sampling))


class ForceTokens:
    """A logits processor that forces a fixed token sequence, then end of turn."""

    def __init__(self, ids, eos=151645):
        self.ids = list(ids) + [eos]

    def __call__(self, output_ids, logits):
        forced = torch.full_like(logits, float("-inf"))
        for row, ids in enumerate(output_ids):
            forced[row, self.ids[min(len(ids), len(self.ids) - 1)]] = 0.0
        return forced


class Explode:
    def __call__(self, output_ids, logits):
        raise RuntimeError("boom")


async def test_greedy_is_deterministic(builtin_engine):
    a = await builtin_engine.generate(req(temperature=0))
    b = await builtin_engine.generate(req(temperature=0))
    assert a.token_ids == b.token_ids and a.text == b.text
    assert a.usage.completion_tokens == 16 and a.finish_reason == "length"


async def test_seed_reproducible_and_seeds_differ(builtin_engine):
    sampling = dict(temperature=1.0, top_p=1.0, top_k=0)
    a = await builtin_engine.generate(req(seed=1234, **sampling))
    b = await builtin_engine.generate(req(seed=1234, **sampling))
    c = await builtin_engine.generate(req(seed=4321, **sampling))
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


async def test_top_k_one_equals_greedy(builtin_engine):
    greedy = await builtin_engine.generate(req(temperature=0))
    top1 = await builtin_engine.generate(req(temperature=0.9, top_k=1, seed=5))
    assert top1.token_ids == greedy.token_ids


async def test_max_tokens_respected(builtin_engine):
    for n in (1, 5):
        result = await builtin_engine.generate(req(max_tokens=n, temperature=0.7))
        assert len(result.token_ids) == n == result.usage.completion_tokens
        assert result.finish_reason == "length"


async def test_usage_and_timings(builtin_engine):
    stream = builtin_engine.submit(req(max_tokens=8))
    result = await stream.collect()
    assert result.usage.prompt_tokens == stream.prompt_tokens > 5
    assert result.timings.total >= result.timings.time_to_first_token > 0
    assert result.timings.tokens_per_second > 0


async def test_stop_string_spanning_tokens_is_cut_and_never_streamed(builtin_engine):
    deltas = [c.text async for c in builtin_engine.submit(req(max_tokens=24, temperature=0))]
    full = "".join(deltas)
    boundary = next(i for i in range(len(deltas) - 1)
                    if len(deltas[i]) >= 2 and len(deltas[i + 1]) >= 2)
    stop = deltas[boundary][-2:] + deltas[boundary + 1][:2]
    expected = full[: full.find(stop)]
    chunks = [c async for c in builtin_engine.submit(req(max_tokens=24, temperature=0, stop=[stop]))]
    streamed = "".join(c.text for c in chunks)
    assert streamed == expected
    assert stop not in streamed
    assert chunks[-1].finish_reason == "stop"


async def test_multibyte_characters_streamed_whole(builtin_engine, builtin_tokenizer):
    text = "🫠 x🦜 日本 naïve"
    ids = builtin_tokenizer.encode(text)
    chunks = [c async for c in builtin_engine.submit(
        req(max_tokens=64, logits_processors=[ForceTokens(ids)]))]
    assert "".join(c.text for c in chunks) == text
    assert all("\ufffd" not in c.text for c in chunks)
    assert chunks[-1].finish_reason == "stop"  # the forced <|im_end|>
    # Split characters were held back: fewer chunks than tokens, yet every token id is reported.
    assert len(chunks) < len(ids)
    assert [i for c in chunks for i in c.token_ids] == ids + [151645]


async def blocks_used(engine, idle: int, timeout: float = 5.0) -> int:
    """The KV blocks held by live requests, once they drop back to `idle` (or the timeout)."""
    for _ in range(int(timeout / 0.02)):
        used = engine.info()["kv_cache"]["blocks_used"]
        if used == idle:
            break
        await asyncio.sleep(0.02)
    return used


async def test_cancel_frees_within_one_step(builtin_engine):
    idle = builtin_engine.info()["kv_cache"]["blocks_used"]
    stream = builtin_engine.submit(req(max_tokens=100_000, temperature=0.7))
    received, after_cancel = 0, 0
    async for chunk in stream:
        received += 1
        if received == 3:
            assert builtin_engine.info()["kv_cache"]["blocks_used"] > idle
            stream.cancel()
        elif received > 3:
            after_cancel += len(chunk.token_ids)
        if chunk.finish_reason:
            break
    assert chunk.finish_reason == "cancelled"
    # at most the steps already under way: one, and with async scheduling (on with CUDA) the
    # one launched ahead of it
    ahead = builtin_engine.info()["step"]["async_scheduling"]
    assert after_cancel <= (2 if ahead else 1)
    assert await blocks_used(builtin_engine, idle) == idle
    for _ in range(50):
        if builtin_engine.active_count == 0:
            break
        await asyncio.sleep(0.02)
    assert builtin_engine.active_count == 0


async def test_abandoned_stream_cancels(builtin_engine):
    idle = builtin_engine.info()["kv_cache"]["blocks_used"]
    cancelled = builtin_engine.info()["counters"]["cancelled"]
    stream = builtin_engine.submit(req(max_tokens=100_000))
    async for _ in stream:
        break
    assert await blocks_used(builtin_engine, idle) == idle
    assert builtin_engine.info()["counters"]["cancelled"] == cancelled + 1


async def test_ten_simultaneous_requests_match_solo(builtin_engine):
    requests = [
        lambda i=i: req(max_tokens=12, temperature=0,
                        messages=[{"role": "user", "content": f"Question number {i}?"}])
        for i in range(10)
    ]
    solo = [await builtin_engine.generate(make()) for make in requests]
    together = await asyncio.gather(*(builtin_engine.generate(make()) for make in requests))
    assert [r.token_ids for r in together] == [r.token_ids for r in solo]
    assert len({tuple(r.token_ids) for r in solo}) > 1  # the prompts really differ


async def test_failure_stays_with_its_request(builtin_engine):
    bad = builtin_engine.submit(req(max_tokens=8, logits_processors=[Explode()]))
    good = builtin_engine.submit(req(max_tokens=8))
    bad_result, good_result = await asyncio.gather(bad.collect(), good.collect())
    assert bad_result.finish_reason == "error" and "boom" in bad_result.error
    assert good_result.finish_reason == "length"


@pytest.fixture(scope="module")
async def small_engine(builtin_dir):
    engine = Engine(EngineSettings(model="builtin", cache_dir=CACHE_DIR, max_context=48,
                                   max_active_requests=1, max_queued_requests=0))
    await engine.start()
    yield engine
    await engine.shutdown()


async def test_context_error_carries_both_numbers(small_engine):
    long = [{"role": "user", "content": "word " * 100}]
    with pytest.raises(ContextLengthError) as info:
        small_engine.submit(req(messages=long))
    assert info.value.max_context == 48 and info.value.prompt_tokens > 48
    assert "48" in str(info.value) and str(info.value.prompt_tokens) in str(info.value)


async def test_max_tokens_clipped_to_window(small_engine):
    stream = small_engine.submit(req(max_tokens=48))  # the whole window; more is a 400
    assert stream.max_tokens == 48 - stream.prompt_tokens
    result = await stream.collect()
    assert result.usage.completion_tokens == stream.max_tokens
    assert result.usage.total_tokens == 48


async def test_overloaded_when_queue_full(small_engine):
    first = small_engine.submit(req(max_tokens=30))  # queued or running: the only slot is taken
    with pytest.raises(EngineOverloadedError):
        small_engine.submit(req(max_tokens=4))
    first.cancel()
    await first.collect()


async def test_trim_policy_drops_oldest_turns(builtin_dir):
    engine = Engine(EngineSettings(model="builtin", cache_dir=CACHE_DIR, max_context=64,
                                   trim_chat_history=True))
    await engine.start()
    try:
        history = [{"role": "system", "content": "Sys."}]
        for i in range(8):
            history += [{"role": "user", "content": f"turn {i} " * 3},
                        {"role": "assistant", "content": "ok " * 3}]
        history.append({"role": "user", "content": "last"})
        request = req(max_tokens=4, messages=history)
        result = await engine.generate(request)
        assert result.usage.prompt_tokens < 64
        assert request.messages[0]["role"] == "system" and request.messages[-1]["content"] == "last"
        assert len(request.messages) < len(history)
    finally:
        await engine.shutdown()


async def test_tiny_temperature_is_greedy(builtin_engine):
    greedy = await builtin_engine.generate(req(temperature=0))
    tiny = await builtin_engine.generate(req(temperature=1e-45, repetition_penalty=1e-300))
    assert tiny.finish_reason == "length" and len(tiny.token_ids) == 16
    assert (await builtin_engine.generate(req(temperature=1e-45))).token_ids == greedy.token_ids


async def test_logprobs_skip_masked_alternatives_and_the_stop_token(builtin_engine, builtin_tokenizer):
    ids = builtin_tokenizer.encode("ok!")
    result = await builtin_engine.generate(req(max_tokens=16, logprobs=5,
                                               logits_processors=[ForceTokens(ids)]))
    assert result.finish_reason == "stop" and result.token_ids == ids + [151645]
    assert [lp.token_id for lp in result.logprobs] == ids  # no entry for <|im_end|>
    for lp in result.logprobs:
        assert lp.logprob == 0.0  # forced: the only token left
        assert [t for t, _, _ in lp.top] == [lp.token_id]  # -inf alternatives are dropped


async def test_asubmit_matches_submit_and_reports_the_prompt(builtin_engine):
    request = req(max_tokens=6, temperature=0)
    stream = await builtin_engine.asubmit(request)
    assert stream.prompt_text.endswith("<|im_start|>assistant\n")
    assert stream.prompt_token_ids[-3:] == [151644, 77091, 198]
    again = builtin_engine.submit(GenerationRequest(prompt_token_ids=stream.prompt_token_ids,
                                                    sampling=SamplingParams(max_tokens=6, temperature=0)))
    assert again.prompt_text is None
    assert (await stream.collect()).token_ids == (await again.collect()).token_ids


def test_loading_pauses_the_garbage_collector_and_restores_it():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # a second engine loading at the same time
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("load failed")
    assert gc.isenabled()
