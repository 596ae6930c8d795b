"""`logit_bias` (OpenAI's parameter) on /completions, /chat/completions and /generate, greedy on the
built-in model: -100 bans a token, +100 forces it, other rows of the batch are untouched, and
out-of-range biases or unknown token ids are 400s."""

from __future__ import annotations

import asyncio

import pytest

from inference import GenerationRequest, SamplingParams

PROMPT = "The sea is"
GREEDY = {"temperature": 0, "max_tokens": 6}


async def greedy_ids(engine, bias: dict[int, float] | None = None) -> list[int]:
    sampling = SamplingParams(max_tokens=6, temperature=0, logit_bias=bias)
    return (await engine.generate(GenerationRequest(prompt=PROMPT, sampling=sampling))).token_ids


def forced_token(tokenizer) -> int:
    (token,) = tokenizer.encode(" banana", add_special_tokens=False)
    return token


async def test_minus_100_bans_a_token(api_client, builtin_engine):
    tokenizer = builtin_engine.tokenizer
    first = (await greedy_ids(builtin_engine))[0]
    response = await api_client.post("/completions", json={
        "prompt": PROMPT, "logprobs": 5, "logit_bias": {str(first): -100}, **GREEDY})
    assert response.status_code == 200, response.text
    logprobs = response.json()["choices"][0]["logprobs"]
    banned = tokenizer.decode([first])
    assert banned not in logprobs["tokens"]
    assert all(banned not in top for top in logprobs["top_logprobs"])  # nor an alternative
    assert first not in await greedy_ids(builtin_engine, {first: -100.0})


async def test_plus_100_forces_a_token(api_client, builtin_engine):
    token = forced_token(builtin_engine.tokenizer)
    assert token not in await greedy_ids(builtin_engine)  # not what the model would say
    bias = {str(token): 100}
    completion = await api_client.post("/completions", json={
        "prompt": PROMPT, "logit_bias": bias, **GREEDY})
    assert completion.json()["choices"][0]["text"] == " banana" * 6
    generated = await api_client.post("/generate", json={"prompt": PROMPT, "logit_bias": bias,
                                                         **GREEDY})
    assert generated.json()["text"] == " banana" * 6
    chat = await api_client.post("/chat/completions", json={
        "messages": [{"role": "user", "content": "Name a fruit."}], "logit_bias": bias,
        **GREEDY})
    assert chat.json()["choices"][0]["message"]["content"] == " banana" * 6


async def test_a_bias_stays_in_its_own_row_of_the_batch(builtin_engine):
    token = forced_token(builtin_engine.tokenizer)
    plain, biased = await asyncio.gather(greedy_ids(builtin_engine),
                                         greedy_ids(builtin_engine, {token: 100.0}))
    assert plain == await greedy_ids(builtin_engine) and biased == [token] * 6


@pytest.mark.parametrize("bias", [
    {"151645": 101}, {"151645": -100.5}, {"abc": 1}, {"-3": 1}, {"1": "high"},
    {str(i): 1 for i in range(1025)}, {"10000000": 5},
])
async def test_invalid_biases_are_400(api_client, bias):
    for path, body in (("/completions", {"prompt": "x"}), ("/generate", {"prompt": "x"}),
                       ("/chat/completions", {"messages": [{"role": "user", "content": "x"}]})):
        response = await api_client.post(path, json={**body, "logit_bias": bias, "max_tokens": 1})
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["param"].startswith("logit_bias"), response.text
