"""Async scheduling on the built-in model (float32), against the same engine without it: while
only decodes run, each step is launched before the previous one's tokens are read back, its input
ids taken from the device. Requests that join and leave, end on a stop string, are cancelled, or
hit the prefix cache that such steps filled must give exactly the tokens of the plain loop (on the
CPU a row's numbers do not depend on the rest of the batch), and the steps must really have been
launched ahead (`steps_launched_ahead` in model info)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from inference import Engine, EngineSettings, GenerationRequest, SamplingParams

from ..conftest import CACHE_DIR


async def start(**settings) -> Engine:
    engine = Engine(EngineSettings(model="builtin", cache_dir=CACHE_DIR, compute_dtype="float32",
                                   kv_cache_tokens=4096, **settings))
    await engine.start()
    assert engine.state == "ready", engine.error
    return engine


@pytest.fixture(scope="module")
async def engines(builtin_dir):
    """On the CPU also on a GPU machine: a GPU step's kernels differ by batch size, and the two
    loops' batches differ on the steps where a request has just ended."""
    ahead = await start(async_scheduling=True, device_map="cpu")
    plain = await start(async_scheduling=False, device_map="cpu")
    yield ahead, plain
    await ahead.shutdown()
    await plain.shutdown()


def chat(content: str, max_tokens: int, **sampling) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": content}],
                             sampling=SamplingParams(max_tokens=max_tokens, **sampling))


REQUESTS = [  # greedy and sampled, seeded, each with its own length: they end on different steps
    lambda: chat("Count to twenty.", 33, temperature=0),
    lambda: chat("Name a colour.", 5, temperature=0),
    lambda: chat("Tell me about boats.", 24, temperature=0.8, seed=11),
    lambda: chat("Tell me about rivers.", 17, temperature=1.0, top_k=50, top_p=0.9, seed=12),
    lambda: chat("Write a haiku.", 40, temperature=0.7, min_p=0.05, seed=13, stop_token_ids=[]),
]


def counters(engine: Engine) -> dict:
    return engine.info()["counters"]


async def test_the_model_info_says_which_loop_runs(engines):
    ahead, plain = engines
    assert ahead.info()["step"]["async_scheduling"] is True
    assert plain.info()["step"]["async_scheduling"] is False


async def test_requests_joining_and_leaving_get_the_plain_loops_tokens(engines):
    ahead, plain = engines
    solo = [await plain.generate(make()) for make in REQUESTS]
    assert counters(plain)["steps_launched_ahead"] == 0
    before = counters(ahead)["steps_launched_ahead"]

    async def later(make, after: asyncio.Event):
        await after.wait()
        return await ahead.generate(make())

    first = await ahead.asubmit(REQUESTS[0]())
    started = asyncio.Event()

    async def read_first():
        chunks = []
        async for chunk in first:
            chunks.append(chunk)
            started.set()
        return chunks

    reader = asyncio.create_task(read_first())
    rest = await asyncio.gather(*(later(make, started) for make in REQUESTS[1:]))
    chunks = await reader
    got = [[t for c in chunks for t in c.token_ids], *(r.token_ids for r in rest)]
    texts = ["".join(c.text for c in chunks), *(r.text for r in rest)]
    for i, want in enumerate(solo):
        assert got[i] == want.token_ids, f"request {i}"
        assert texts[i] == want.text, f"request {i}"
    assert counters(ahead)["steps_launched_ahead"] > before + 20


async def test_a_stop_string_ends_the_request_where_the_plain_loop_ends_it(engines):
    ahead, plain = engines
    full = await plain.generate(chat("Say something long.", 30, temperature=0))
    stop = full.text[len(full.text) // 2:][:3]
    assert stop.strip(), full.text
    want = await plain.generate(chat("Say something long.", 30, temperature=0, stop=[stop]))
    assert want.finish_reason == "stop"
    other = ahead.generate(chat("Keep going.", 30, temperature=0))
    got, beside = await asyncio.gather(
        ahead.generate(chat("Say something long.", 30, temperature=0, stop=[stop])), other)
    assert (got.text, got.finish_reason, got.token_ids) == (want.text, "stop", want.token_ids)
    assert len(beside.token_ids) == 30
    assert await wait_for_idle(ahead)


async def wait_for_idle(engine: Engine, timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.02)):
        kv = engine.kv_cache()
        if counters(engine)["active_requests"] == 0 and kv["blocks_used"] == 0:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_cancelling_mid_stream_frees_the_blocks(engines):
    ahead, _ = engines
    assert await wait_for_idle(ahead)
    stream = await ahead.asubmit(chat("Go on forever.", 2000, temperature=0.8, seed=5))
    received = 0
    async for chunk in stream:
        received += len(chunk.token_ids)
        if received >= 20:
            stream.cancel()
    assert chunk.finish_reason == "cancelled"
    assert await wait_for_idle(ahead), ahead.kv_cache()


async def test_blocks_filled_by_steps_launched_ahead_give_the_same_tokens_when_hit(engines):
    """A chat re-sent with its reply: the reply's blocks were written by steps whose input ids
    never reached the host first; reusing them must change nothing."""
    ahead, plain = engines
    first = await ahead.generate(chat("Describe a harbour at dawn.", 48, temperature=0))
    ids = ahead.tokenize(chat("Describe a harbour at dawn.", 1)) + first.token_ids
    follow_up = GenerationRequest(prompt_token_ids=ids + [13, 13],
                                  sampling=SamplingParams(max_tokens=16, temperature=0))
    hits = ahead.kv_cache()["prefix_cache_hit_tokens"]
    got = await ahead.generate(follow_up)
    assert ahead.kv_cache()["prefix_cache_hit_tokens"] - hits >= len(ids) // 16 * 16 - 16
    reference = await plain.generate(GenerationRequest(
        prompt_token_ids=ids + [13, 13], sampling=SamplingParams(max_tokens=16, temperature=0)))
    assert got.token_ids == reference.token_ids


async def test_logprobs_and_penalties_beside_launched_ahead_streams(engines):
    """Requests whose next step needs their tokens on the host first run beside plain ones (the
    penalised one outlives the others, so it also runs alone); every request still gets the plain
    loop's tokens and logprobs."""
    ahead, plain = engines
    makes = [lambda: chat("One.", 8, temperature=0, logprobs=2),
             lambda: chat("Two.", 40, temperature=0.9, seed=3, frequency_penalty=1.5,
                          presence_penalty=0.5, repetition_penalty=1.3),
             lambda: chat("Three.", 20, temperature=0.9, seed=4)]
    want = [await plain.generate(make()) for make in makes]
    got = await asyncio.gather(*(ahead.generate(make()) for make in makes))
    for g, w in zip(got, want, strict=True):
        assert g.token_ids == w.token_ids
    assert [lp.token_id for lp in got[0].logprobs] == got[0].token_ids
    assert [(lp.token_id, round(lp.logprob, 4)) for lp in got[0].logprobs] == \
        [(lp.token_id, round(lp.logprob, 4)) for lp in want[0].logprobs]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the CUDA graphs' loop")
async def test_one_stream_through_the_cuda_graphs_gets_the_plain_loops_tokens(builtin_dir):
    """One stream replays the same one-row graph whether or not its inputs come from the device,
    so greedy and seeded replies must agree exactly."""
    ahead = await start(async_scheduling=True, max_active_requests=8)
    plain = await start(async_scheduling=False, max_active_requests=8)
    try:
        assert ahead.info()["step"]["cuda_graphs"]
        for make in REQUESTS:
            want = await plain.generate(make())
            got = await ahead.generate(make())
            assert (got.token_ids, got.text) == (want.token_ids, want.text)
        assert counters(ahead)["steps_launched_ahead"] > 50
    finally:
        await ahead.shutdown()
        await plain.shutdown()


async def test_a_grammar_request_alone_gets_valid_json_and_the_plain_loops_tokens(engines):
    """A grammar's next mask needs the last token consumed on the host: such a request never
    has its next step launched ahead, and stays valid."""
    import json

    from inference.types import Grammar

    ahead, plain = engines
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"]}

    def make():
        return chat("Describe a person as JSON.", 80, temperature=0.9, seed=21,
                    grammar=Grammar("json_schema", schema))

    want = await plain.generate(make())
    got = await ahead.generate(make())
    assert got.finish_reason == want.finish_reason and got.token_ids == want.token_ids
    if got.finish_reason == "stop":
        json.loads(got.text)


async def test_a_prompt_prefilled_in_chunks_is_not_held_back_by_launched_ahead_decodes(builtin_dir):
    """Launching ahead stops while a prompt still has chunks to compute: a request that arrives
    beside a long stream is prefilled (16 tokens a step here) and finishes first."""
    engine = await start(async_scheduling=True, max_num_batched_tokens=16, device_map="cpu")
    try:
        long = await engine.asubmit(chat("Go on and on.", 400, temperature=0.8, seed=8))
        order: list[str] = []
        started = asyncio.Event()

        async def read_long():
            async for chunk in long:
                started.set()
                if chunk.finish_reason is not None:
                    order.append("long")

        reader = asyncio.create_task(read_long())
        await started.wait()
        text = " ".join(f"Line {i} of a prompt long enough for several chunks." for i in range(12))
        short = await engine.generate(chat(text, 4, temperature=0))
        order.append("short")
        assert short.usage.prompt_tokens > 64 and len(short.token_ids) == 4
        await reader
        assert order == ["short", "long"]
        assert counters(engine)["steps_launched_ahead"] > 0
    finally:
        await engine.shutdown()
