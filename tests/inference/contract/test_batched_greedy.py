"""Batched greedy decoding equals solo greedy decoding: requests with different prompts and lengths,
joining a running batch at different times, produce the tokens each produces alone, except after a
float32 tie (`assert_same_greedy`). The rule itself is tested first, on made-up results, so that
it can be trusted to fail."""

from __future__ import annotations

import asyncio

import pytest

from inference import GenerationResult, Timings, TokenLogprob, Usage

from .helpers import assert_same_greedy, chat, req

# (prompt, max_tokens): different lengths of prompt and of output.
FIRST_WAVE = [("Tell me a story about a dragon who collects teapots.", 40),
              ("Hi", 32),
              ("Explain quantum computing in simple terms please.", 36)]
LATER_WAVE = [("What is the capital of France?", 12),
              ("Write a haiku about the sea, then explain every line of it in detail.", 20),
              ("1, 2, 3,", 8)]


def greedy(prompt: str, max_tokens: int, logprobs: int | None = None):
    return req(max_tokens, messages=chat(prompt), temperature=0, logprobs=logprobs)


class Reader:
    """Consumes a stream in a task: chunks in order, and the tick (a shared counter of chunks
    seen across all readers) of its first and last chunk."""

    ticks = 0

    def __init__(self, stream):
        self.stream = stream
        self.token_ids: list[int] = []
        self.first_tick = self.last_tick = None
        self.started = asyncio.Event()
        self.final = None
        self.task = asyncio.create_task(self._read())

    async def _read(self):
        async for chunk in self.stream:
            Reader.ticks += 1
            self.first_tick = self.first_tick or Reader.ticks
            self.last_tick = Reader.ticks
            self.token_ids += chunk.token_ids
            self.final = chunk
            self.started.set()


async def test_requests_joining_a_batch_match_their_solo_runs(builtin_engine):
    everything = FIRST_WAVE + LATER_WAVE
    solo = [await builtin_engine.generate(greedy(p, n, logprobs=2)) for p, n in everything]
    assert len({tuple(r.token_ids) for r in solo}) > 1  # the prompts really differ

    first = [Reader(await builtin_engine.asubmit(greedy(p, n))) for p, n in FIRST_WAVE]
    for reader in first:
        await asyncio.wait_for(reader.started.wait(), 60)
    assert not any(r.final.finish_reason for r in first)  # the batch is running
    later = []
    for prompt, n in LATER_WAVE:  # join one by one, a few chunks apart
        later.append(Reader(builtin_engine.submit(greedy(prompt, n, logprobs=2 if n > 10 else None))))
        await asyncio.wait_for(later[-1].started.wait(), 60)
    readers = first + later
    await asyncio.wait_for(asyncio.gather(*(r.task for r in readers)), 120)
    # The later wave really joined a running batch: it started before the first wave ended.
    assert min(r.first_tick for r in later) < max(r.last_tick for r in first)

    for (_, n), alone, reader in zip(everything, solo, readers, strict=True):
        batched = GenerationResult(reader.stream.request_id, "", reader.token_ids,
                                   reader.final.finish_reason, reader.final.usage, Timings())
        assert_same_greedy(alone, batched)
        assert batched.usage.completion_tokens == len(batched.token_ids) <= n


async def test_same_prompt_many_times_in_one_batch(builtin_engine):
    alone = await builtin_engine.generate(greedy("Same prompt for everyone.", 16, logprobs=2))
    together = await asyncio.gather(*(builtin_engine.generate(greedy("Same prompt for everyone.", 16))
                                      for _ in range(5)))
    for result in together:
        assert_same_greedy(alone, result)


# -- the rule itself ----------------------------------------------------------------------------


def made_up(ids, tops=None) -> GenerationResult:
    logprobs = None
    if tops is not None:
        logprobs = [TokenLogprob(i, str(i), top[0][1] if top else -1.0,
                                 [(t, str(t), lp) for t, lp in top])
                    for i, top in zip(ids, tops, strict=False)]
    return GenerationResult("r", "", list(ids), "length", Usage(1, len(ids)), Timings(),
                            logprobs=logprobs)


TIE = [(5, -1.00000), (6, -1.00005)]  # within 1e-4
GAP = [(5, -1.0), (6, -1.5)]


def test_rule_accepts_identical_outputs_without_logprobs():
    assert_same_greedy(made_up([1, 2, 3]), made_up([1, 2, 3]))


def test_rule_accepts_a_tie_and_anything_after_it():
    solo = made_up([1, 5, 7, 7], [[(1, -0.5), (2, -2.0)], TIE, [(7, -1.0), (8, -3.0)], []])
    assert_same_greedy(solo, made_up([1, 6, 9, 9, 9]))


@pytest.mark.parametrize("case", ["gap", "no-logprobs", "one-alternative", "not-the-tied-pair",
                                  "prefix", "no-entry-there"])
def test_rule_rejects_everything_else(case):
    solo, batched = {
        "gap": (made_up([1, 5, 7], [[(1, -0.5)] * 2, GAP, []]), made_up([1, 6, 7])),
        "no-logprobs": (made_up([1, 5, 7]), made_up([1, 6, 7])),
        "one-alternative": (made_up([1, 5], [[(1, -0.5)] * 2, [(5, -1.0)]]), made_up([1, 6])),
        "not-the-tied-pair": (made_up([1, 5], [[(1, -0.5)] * 2, TIE]), made_up([1, 9])),
        "prefix": (made_up([1, 5], [[(1, -0.5)] * 2, TIE]), made_up([1, 5, 8])),
        "no-entry-there": (made_up([1, 5], [[(1, -0.5)] * 2]), made_up([1, 6])),
    }[case]  # no-entry-there: the solo run stopped on a stop token, which has no logprob
    with pytest.raises(AssertionError):
        assert_same_greedy(solo, batched)
