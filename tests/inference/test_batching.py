"""Continuous batching on the built-in model, through the public interface only: chunked prefill,
preemption when the KV pool runs out, prefix caching, and the pool's capacity as a context limit.

Greedy outputs of two runs that compute the same thing differently (in chunks, recomputed after a
preemption, read from the prefix cache) are compared with a tie rule: float32 on random weights
produces near-ties, where a different summation order may flip the argmax. Where two runs first
differ, the reference run (again, with logprobs) must show a near-tie between exactly the two tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from inference import ContextLengthError, Engine, EngineSettings, GenerationRequest, SamplingParams

from ..conftest import CACHE_DIR
from .test_engine import blocks_used

TIE = 1e-4

MakeRequest = Callable[..., GenerationRequest]


def ids_request(prompt_ids: list[int], max_tokens: int) -> MakeRequest:
    def make(**sampling) -> GenerationRequest:
        return GenerationRequest(prompt_token_ids=list(prompt_ids),
                                 sampling=SamplingParams(max_tokens=max_tokens, temperature=0,
                                                         **sampling))
    return make


def chat_request(messages: list[dict], max_tokens: int) -> MakeRequest:
    def make(**sampling) -> GenerationRequest:
        return GenerationRequest(messages=[dict(m) for m in messages],
                                 sampling=SamplingParams(max_tokens=max_tokens, temperature=0,
                                                         **sampling))
    return make


async def assert_same_greedy(got: list[int], reference: Engine, make: MakeRequest,
                             expected: list[int] | None = None, what: str = "") -> None:
    """`got` equals the reference engine's greedy tokens for `make()`, or first differs from them
    where the reference's top two candidates are the two tokens and tie within TIE."""
    if expected is None:
        expected = (await reference.generate(make())).token_ids
    if got == expected:
        return
    i = next((k for k, (x, y) in enumerate(zip(got, expected, strict=False)) if x != y), None)
    assert i is not None, f"{what}: one output is a prefix of the other:\n{got}\n{expected}"
    again = await reference.generate(make(logprobs=2))
    assert again.token_ids[:i + 1] == expected[:i + 1], f"{what}: the reference is not deterministic"
    assert i < len(again.logprobs), f"{what}: outputs differ at a stop token (position {i})"
    top = again.logprobs[i].top
    assert len(top) == 2, f"{what}: fewer than two candidates at position {i}"
    (id0, _, lp0), (id1, _, lp1) = top
    gap = abs(lp0 - lp1)
    assert {got[i], expected[i]} == {id0, id1} and gap < TIE, (
        f"{what}: outputs differ at position {i} ({got[i]} vs reference {expected[i]}) without a "
        f"tie: reference top two {top[0][0]}:{lp0:.6f}, {top[1][0]}:{lp1:.6f} (gap {gap:.2e})\n"
        f"got       {got}\nreference {expected}")


def kv(engine: Engine) -> dict:
    return engine.info()["kv_cache"]


async def start(**settings) -> Engine:
    engine = Engine(EngineSettings(model="builtin", cache_dir=CACHE_DIR, compute_dtype="float32",
                                   **settings))
    await engine.start()
    assert engine.state == "ready", engine.error
    return engine


@pytest.fixture(scope="module")
async def engine(builtin_dir):
    """Default step budget (one-shot prefill of these prompts), prefix caching on."""
    engine = await start(kv_cache_tokens=4096)
    yield engine
    await engine.shutdown()


@pytest.fixture(scope="module")
async def chunked(builtin_dir):
    """16 tokens per step: a 100-token prompt prefills in seven chunks."""
    engine = await start(kv_cache_tokens=4096, max_num_batched_tokens=16)
    yield engine
    await engine.shutdown()


@pytest.fixture(scope="module")
async def uncached(builtin_dir):
    engine = await start(kv_cache_tokens=4096, prefix_caching=False)
    yield engine
    await engine.shutdown()


@pytest.fixture(scope="module")
async def tiny(builtin_dir):
    """16 blocks of 16 tokens: room for three of the preemption test's requests at once."""
    engine = await start(kv_cache_tokens=256, block_size=16, max_num_batched_tokens=32,
                         max_active_requests=8)
    yield engine
    await engine.shutdown()


def words(tokenizer, text: str, n: int) -> list[int]:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) >= n, len(ids)
    return ids[:n]


SYSTEM = " ".join(f"Rule {i}: answer briefly, politely and in plain English." for i in range(20))


async def test_tie_rule_rejects_a_real_difference(engine):
    make = chat_request([{"role": "user", "content": "Count to ten."}], 6)
    expected = (await engine.generate(make())).token_ids
    await assert_same_greedy(list(expected), engine, make, expected, "identical")
    changed = list(expected)
    changed[3] = (changed[3] + 1) % 1000
    with pytest.raises(AssertionError, match="without a tie"):
        await assert_same_greedy(changed, engine, make, expected, "changed")
    with pytest.raises(AssertionError, match="prefix"):
        await assert_same_greedy(expected[:4], engine, make, expected, "shorter")


async def test_chunked_prefill_matches_one_shot(engine, chunked):
    text = " ".join(f"The {i}th line of a long story about boats and rivers." for i in range(12))
    make = ids_request(words(engine.tokenizer, text, 100), max_tokens=12)
    hits = kv(chunked)["prefix_cache_hit_tokens"]
    one_shot = await engine.generate(make())
    in_chunks = await chunked.generate(make())
    assert kv(chunked)["max_num_batched_tokens"] == 16
    assert kv(chunked)["prefix_cache_hit_tokens"] == hits  # really computed, in chunks
    assert in_chunks.finish_reason == one_shot.finish_reason == "length"
    assert len(in_chunks.token_ids) == 12
    await assert_same_greedy(in_chunks.token_ids, engine, make, one_shot.token_ids, "chunked")


async def test_chunked_prefill_of_a_chat_beside_a_decoding_stream(chunked, engine):
    # A long chat prompt arrives while another request decodes: both come out as when run alone.
    long_chat = chat_request([{"role": "user", "content": "Describe every boat. " * 25}], 8)
    short = chat_request([{"role": "user", "content": "Hi."}], 24)
    together = await asyncio.gather(chunked.generate(short()), chunked.generate(long_chat()))
    for result, make, name in zip(together, (short, long_chat), ("short", "long"), strict=True):
        assert result.finish_reason == "length"
        await assert_same_greedy(result.token_ids, engine, make, what=name)
    assert await blocks_used(chunked, 0) == 0


async def test_preemption_recomputes_and_matches_solo(tiny):
    tokenizer = tiny.tokenizer
    makes = [ids_request(words(tokenizer, f"Request {i} asks about topic {i * 7}: " + "why? " * 40,
                               40), max_tokens=40) for i in range(6)]
    before = kv(tiny)
    assert before["capacity_tokens"] == 256 and before["blocks_total"] == 16
    assert 6 * 80 > before["capacity_tokens"]  # prompts and outputs cannot all fit at once

    together = await asyncio.gather(*(tiny.generate(make()) for make in makes))
    assert [r.finish_reason for r in together] == ["length"] * 6
    assert all(len(r.token_ids) == 40 for r in together)
    assert kv(tiny)["preemptions"] > before["preemptions"]
    assert tiny.info()["counters"]["failed"] == 0
    assert await blocks_used(tiny, 0) == 0

    for i, (make, result) in enumerate(zip(makes, together, strict=True)):
        solo = await tiny.generate(make())
        assert solo.finish_reason == "length"
        await assert_same_greedy(result.token_ids, tiny, make, solo.token_ids, f"request {i}")
    assert len({tuple(r.token_ids) for r in together}) > 1  # the prompts really differ
    assert await blocks_used(tiny, 0) == 0


async def test_shared_system_prompt_hits_the_prefix_cache(engine, uncached):
    first = chat_request([{"role": "system", "content": SYSTEM},
                          {"role": "user", "content": "What is a river?"}], 8)
    second = chat_request([{"role": "system", "content": SYSTEM},
                           {"role": "user", "content": "Name three boats, please."}], 8)
    stream = engine.submit(first())
    assert stream.prompt_tokens >= 200
    assert (await stream.collect()).finish_reason == "length"

    stats = kv(engine)
    result = await engine.generate(second())
    after = kv(engine)
    hit = after["prefix_cache_hit_tokens"] - stats["prefix_cache_hit_tokens"]
    assert hit >= 160, hit
    assert hit % after["block_size"] == 0
    assert after["prefix_cache_query_tokens"] - stats["prefix_cache_query_tokens"] \
        == result.usage.prompt_tokens
    assert 0 < after["prefix_cache_hit_rate"] <= 1
    await assert_same_greedy(result.token_ids, uncached, second, what="prefix hit")
    assert kv(uncached)["prefix_cache_hit_tokens"] == 0
    assert kv(uncached)["prefix_caching"] is False


async def test_same_request_twice_miss_then_hit(engine, uncached):
    make = chat_request([{"role": "system", "content": "You count sheep. " * 30},
                         {"role": "user", "content": "Start counting at seven."}], 10)
    before = kv(engine)["prefix_cache_hit_tokens"]
    miss = await engine.generate(make())
    middle = kv(engine)["prefix_cache_hit_tokens"]
    assert middle == before  # nothing of this prompt was cached
    hit = await engine.generate(make())
    gained = kv(engine)["prefix_cache_hit_tokens"] - middle
    # Everything but the last (partial or final) block: at least the prompt less one block.
    assert gained >= hit.usage.prompt_tokens - kv(engine)["block_size"]
    assert gained < hit.usage.prompt_tokens
    assert hit.finish_reason == miss.finish_reason == "length"
    # The reference is the miss; should a re-run with logprobs be needed, the uncached engine
    # computes it the same way (the whole prompt in one step).
    await assert_same_greedy(hit.token_ids, uncached, make, miss.token_ids, "hit vs miss")
    assert await blocks_used(engine, 0) == 0


async def test_prompt_of_whole_blocks_recomputes_its_last_block(engine, uncached):
    block = kv(engine)["block_size"]
    text = " ".join(f"Whole block number {i} of sheep." for i in range(20))
    make = ids_request(words(engine.tokenizer, text, 4 * block), max_tokens=6)
    miss = await engine.generate(make())
    before = kv(engine)["prefix_cache_hit_tokens"]
    hit = await engine.generate(make())
    assert kv(engine)["prefix_cache_hit_tokens"] - before == 3 * block  # never the last token
    await assert_same_greedy(hit.token_ids, uncached, make, miss.token_ids, "whole blocks")


async def test_context_is_capped_by_the_pool(tiny):
    info = tiny.info()
    capacity = info["kv_cache"]["capacity_tokens"]
    assert capacity == 256 < info["context_window"]
    assert info["max_context"] == tiny.max_context == capacity

    with pytest.raises(ContextLengthError) as error:
        tiny.submit(GenerationRequest(prompt_token_ids=[1000 + i for i in range(300)],
                                      sampling=SamplingParams(max_tokens=4)))
    assert error.value.max_context == capacity and error.value.prompt_tokens == 300
    with pytest.raises(ContextLengthError):
        tiny.submit(GenerationRequest(prompt_token_ids=[1000 + i for i in range(capacity)],
                                      sampling=SamplingParams(max_tokens=4)))

    # One token short of the pool: accepted, clipped to a single output token, and it fits.
    stream = tiny.submit(GenerationRequest(prompt_token_ids=[1000 + i for i in range(capacity - 1)],
                                           sampling=SamplingParams(max_tokens=100, temperature=0)))
    assert stream.max_tokens == 1
    result = await stream.collect()
    assert result.finish_reason == "length" and len(result.token_ids) == 1
    assert result.usage.total_tokens == capacity
    assert await blocks_used(tiny, 0) == 0
