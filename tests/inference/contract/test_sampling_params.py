"""Every sampling parameter changes what the engine generates: each test pins the parameter's effect
against a reference it would not meet if the parameter were ignored (greedy and forced setups, so
the assertions are deterministic on the random-weight built-in model).

The greedy reference comes from a logits processor that leaves only the argmax (`ArgmaxOnly`), so
it does not depend on temperature, top-k, top-p or min-p, the parameters it checks.
"""

from __future__ import annotations

import pytest

from .helpers import ArgmaxOnly, ForceTokens, req, stop_token_ids

N = 10
# Plain sampling: the full distribution at temperature 1, nothing truncated.
FULL = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
PENALIZED = dict(temperature=0, repetition_penalty=1e3)  # greedy, never the same token twice


@pytest.fixture(scope="module")
async def reference(builtin_engine):
    """Greedy tokens for `CHAT`, whatever the sampling parameters say."""
    result = await builtin_engine.generate(req(N, **FULL, seed=3, logits_processors=[ArgmaxOnly()]))
    assert len(result.token_ids) == N
    return result.token_ids


@pytest.fixture(scope="module")
async def sampled(builtin_engine, reference):
    """The same request sampled from the full distribution (seed 3): not greedy."""
    result = await builtin_engine.generate(req(N, **FULL, seed=3))
    assert result.token_ids != reference  # what each truncation test would see if ignored
    return result.token_ids


async def test_temperature_zero_is_greedy_and_a_high_one_samples(builtin_engine, reference):
    cold = await builtin_engine.generate(req(N, temperature=0, top_k=0, top_p=1.0, seed=3))
    assert cold.token_ids == reference
    hot = await builtin_engine.generate(req(N, temperature=1.5, top_k=0, top_p=1.0, seed=3))
    assert hot.token_ids != reference
    assert len(set(hot.token_ids)) > 1  # a random choice among ~150k tokens, not a greedy loop


async def test_top_k_one_is_greedy_at_temperature_one(builtin_engine, reference, sampled):
    top1 = await builtin_engine.generate(req(N, **{**FULL, "top_k": 1}, seed=3))
    assert top1.token_ids == reference != sampled


async def test_top_k_two_keeps_each_token_among_the_two_likeliest(builtin_engine):
    result = await builtin_engine.generate(req(N, **{**FULL, "top_k": 2}, seed=11, logprobs=2))
    assert len(result.logprobs) == N
    for entry in result.logprobs:
        assert entry.token_id in [token_id for token_id, _, _ in entry.top], entry
    # Control: without top-k the same seed picks tokens outside the top two.
    free = await builtin_engine.generate(req(N, **FULL, seed=11, logprobs=2))
    assert any(e.token_id not in [t for t, _, _ in e.top] for e in free.logprobs)


async def test_tiny_top_p_is_greedy(builtin_engine, reference, sampled):
    nucleus = await builtin_engine.generate(req(N, **{**FULL, "top_p": 1e-6}, seed=3))
    assert nucleus.token_ids == reference != sampled


async def test_min_p_one_is_greedy(builtin_engine, reference, sampled):
    result = await builtin_engine.generate(req(N, **{**FULL, "min_p": 1.0}, seed=3))
    assert result.token_ids == reference != sampled


@pytest.mark.parametrize("prompt", ["chat", "raw"])
async def test_huge_repetition_penalty_never_repeats_a_prompt_or_output_token(builtin_engine,
                                                                               prompt):
    def request(**sampling):
        if prompt == "chat":
            return req(16, **sampling)
        made = req(16, **sampling)
        made.messages, made.prompt = None, "Once upon a time"
        return made

    plain = await builtin_engine.asubmit(request(temperature=0))
    prompt_ids = set(plain.prompt_token_ids)
    baseline = (await plain.collect()).token_ids
    # Control: unpenalized greedy repeats itself (and, on the raw prompt, the prompt's last word).
    assert len(set(baseline)) < len(baseline)
    if prompt == "raw":
        assert set(baseline) & prompt_ids
    stream = await builtin_engine.asubmit(request(**PENALIZED))
    ids = (await stream.collect()).token_ids
    assert len(ids) == 16 or ids[-1] in stop_token_ids(builtin_engine)
    assert len(set(ids)) == len(ids), ids
    assert not set(ids) & set(stream.prompt_token_ids), ids


@pytest.mark.parametrize("penalty", ["presence_penalty", "frequency_penalty"])
async def test_large_presence_or_frequency_penalty_never_repeats_an_output_token(builtin_engine,
                                                                                   penalty):
    baseline = (await builtin_engine.generate(req(16, temperature=0))).token_ids
    assert len(set(baseline)) < len(baseline)  # control: greedy alone loops
    ids = (await builtin_engine.generate(req(16, temperature=0, **{penalty: 100.0}))).token_ids
    assert len(ids) == 16 or ids[-1] in stop_token_ids(builtin_engine)
    assert len(set(ids)) == len(ids), ids


async def test_stop_string_cuts_the_output_there(builtin_engine):
    full = await builtin_engine.generate(req(24, **PENALIZED))
    assert full.finish_reason == "length"
    text = full.text
    start = len(text) // 2
    stop = text[start:start + 3]
    start = text.find(stop)  # the first occurrence is where generation must stop
    assert start > 0
    cut = await builtin_engine.generate(req(24, **PENALIZED, stop=["\x00never\x00", stop]))
    assert cut.finish_reason == "stop"
    assert cut.text == text[:start]
    assert len(cut.token_ids) < len(full.token_ids)


async def test_stop_token_ids_end_the_output_at_that_token(builtin_engine):
    full = await builtin_engine.generate(req(12, **PENALIZED))
    assert full.finish_reason == "length" and len(full.token_ids) == 12
    stop_at = full.token_ids[3]  # all distinct: first seen at position 3
    assert stop_at not in stop_token_ids(builtin_engine)
    cut = await builtin_engine.generate(req(12, **PENALIZED, stop_token_ids=[stop_at]))
    assert cut.finish_reason == "stop"
    assert cut.token_ids == full.token_ids[:4]  # the stop token is reported, and counted
    assert cut.usage.completion_tokens == 4
    assert full.text.startswith(cut.text) and len(cut.text) < len(full.text)


async def test_seed_same_seed_same_tokens_other_seed_other_tokens(builtin_engine):
    a = await builtin_engine.generate(req(N, **FULL, seed=1234))
    b = await builtin_engine.generate(req(N, **FULL, seed=1234))
    c = await builtin_engine.generate(req(N, **FULL, seed=4321))
    assert a.token_ids == b.token_ids and a.text == b.text
    assert a.token_ids != c.token_ids


@pytest.mark.parametrize("n", [1, 3, 7])
async def test_max_tokens_is_the_exact_length(builtin_engine, n):
    stream = await builtin_engine.asubmit(req(n, temperature=0))  # greedy here never stops early
    assert stream.max_tokens == n
    ids, last = [], None
    async for chunk in stream:
        ids += chunk.token_ids
        last = chunk
        if len(ids) > n:  # max_tokens ignored: stop reading rather than wait for 2048 tokens
            stream.cancel()
            break
    assert len(ids) == n and last.finish_reason == "length"
    assert last.usage.completion_tokens == n


async def test_logprobs_absent_unless_asked_then_k_alternatives(builtin_engine):
    none = await builtin_engine.generate(req(6, temperature=0))
    assert none.logprobs is None
    only = await builtin_engine.generate(req(6, temperature=0, logprobs=0))
    assert [e.token_id for e in only.logprobs] == only.token_ids
    assert all(e.top == [] and e.logprob <= 0.0 for e in only.logprobs)
    for k in (1, 3):
        result = await builtin_engine.generate(req(6, temperature=0, logprobs=k))
        assert [e.token_id for e in result.logprobs] == result.token_ids == none.token_ids
        for entry in result.logprobs:
            assert len(entry.top) == k
            values = [value for _, _, value in entry.top]
            assert values == sorted(values, reverse=True) and values[0] <= 0.0
            # Greedy: the chosen token is the likeliest, with the same log-probability.
            assert entry.top[0][0] == entry.token_id
            assert entry.logprob == pytest.approx(values[0], abs=1e-5)


async def test_logits_processors_decide_the_tokens(builtin_engine, builtin_tokenizer, reference):
    text = "Forced, exactly."
    ids = builtin_tokenizer.encode(text, add_special_tokens=False)
    result = await builtin_engine.generate(req(32, **FULL, seed=3,
                                               logits_processors=[ForceTokens(ids)]))
    assert result.token_ids == ids + [151645] and result.text == text
    assert result.finish_reason == "stop"
    assert result.token_ids[:N] != reference  # without the processor: the greedy loop
