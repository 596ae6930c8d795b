"""Every sampling field of `/generate`, `/completions` and `/chat/completions` reaches the engine: each request
model's `to_sampling_params()` (and `to_generation_request()`) carries it into `SamplingParams`
unchanged. Pure: no server, no model. Values are all different from the defaults, so a field that
is dropped (left to the engine's default) fails."""

from __future__ import annotations

import dataclasses

import pytest

from api.protocol import ChatCompletionRequest, CompletionRequest, GenerateRequest
from inference import SamplingParams

USER = [{"role": "user", "content": "Hi"}]
# Each sampling field with a value that no default has.
COMMON = {"max_tokens": 17, "temperature": 0.37, "top_p": 0.61, "top_k": 7, "min_p": 0.13,
          "repetition_penalty": 1.23, "seed": 4242}
CHAT_ONLY = {"presence_penalty": 0.45, "frequency_penalty": -0.55}


def generate(**fields) -> GenerateRequest:
    return GenerateRequest.model_validate({"prompt": "Once", **fields})


def chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": USER, **fields})


def test_sampling_params_defaults_differ_from_the_values_used_here():
    defaults = SamplingParams()
    for name, value in {**COMMON, **CHAT_ONLY}.items():
        assert getattr(defaults, name) != value, name
    assert defaults.stop == [] and defaults.logprobs is None


@pytest.mark.parametrize("name", sorted(COMMON))
def test_generate_carries_each_field(name):
    params = generate(**{name: COMMON[name]}).to_sampling_params()
    assert getattr(params, name) == COMMON[name]
    # ... and only that one: the others stay at "the model's default".
    others = {f.name: getattr(params, f.name) for f in dataclasses.fields(SamplingParams)
              if f.name != name}
    assert others == {f.name: getattr(SamplingParams(), f.name)
                      for f in dataclasses.fields(SamplingParams) if f.name != name}


def test_generate_carries_every_field_together_into_the_engine_request():
    body = generate(**COMMON, stop=["END", "\n\n"])
    params = body.to_sampling_params()
    for name, value in COMMON.items():
        assert getattr(params, name) == value, name
    assert params.stop == ["END", "\n\n"]
    assert generate(stop="END").to_sampling_params().stop == ["END"]
    request = body.to_generation_request()
    assert request.prompt == "Once" and request.messages is None
    assert request.sampling == params


def test_every_sampling_field_generate_accepts_reaches_the_engine():
    # A field added to GenerateRequest under a SamplingParams name must be carried too.
    shared = set(GenerateRequest.model_fields) & {f.name for f in dataclasses.fields(SamplingParams)}
    assert shared == set(COMMON) | {"stop", "logit_bias"}


@pytest.mark.parametrize("name", sorted({**COMMON, **CHAT_ONLY}))
def test_chat_carries_each_field(name):
    value = {**COMMON, **CHAT_ONLY}[name]
    params = chat(**{name: value}).to_sampling_params()
    assert getattr(params, name) == value


def test_chat_carries_every_field_together_into_each_choice():
    body = chat(**COMMON, **CHAT_ONLY, stop=["END"], logprobs=True, top_logprobs=3, n=3)
    for index in range(3):
        params = body.to_sampling_params(index)
        for name, value in {**COMMON, **CHAT_ONLY}.items():
            expected = value + index if name == "seed" else value
            assert getattr(params, name) == expected, name
        assert params.stop == ["END"] and params.logprobs == 3
        assert body.to_generation_request(index).sampling == params


def test_chat_logprobs_and_max_completion_tokens():
    assert chat().to_sampling_params().logprobs is None
    assert chat(logprobs=True).to_sampling_params().logprobs == 0
    assert chat(logprobs=True, top_logprobs=5).to_sampling_params().logprobs == 5
    assert chat(max_completion_tokens=9).to_sampling_params().max_tokens == 9
    assert chat(max_tokens=4, max_completion_tokens=9).to_sampling_params().max_tokens == 9


def test_every_sampling_field_chat_accepts_reaches_the_engine():
    shared = set(ChatCompletionRequest.model_fields) & {
        f.name for f in dataclasses.fields(SamplingParams)}
    assert shared == set(COMMON) | set(CHAT_ONLY) | {"stop", "logprobs", "logit_bias"}


@pytest.mark.parametrize("model, base", [(GenerateRequest, {"prompt": "Once"}),
                                         (ChatCompletionRequest, {"messages": USER}),
                                         (CompletionRequest, {"prompt": "Once"})])
def test_logit_bias_reaches_the_engine_with_integer_ids(model, base):
    body = model.model_validate({**base, "logit_bias": {"151645": -100, "9707": 2.5}})
    assert body.to_sampling_params().logit_bias == {151645: -100.0, 9707: 2.5}
    assert model.model_validate(base).to_sampling_params().logit_bias is None


def test_completions_carry_every_field_into_each_choice():
    body = CompletionRequest.model_validate({"prompt": ["a", "b"], **COMMON, **CHAT_ONLY,
                                             "stop": ["END"], "logprobs": 2, "n": 2})
    for index in range(2):
        params = body.to_sampling_params(index)
        for name, value in {**COMMON, **CHAT_ONLY}.items():
            assert getattr(params, name) == (value + index if name == "seed" else value), name
        assert params.stop == ["END"] and params.logprobs == 2
    assert body.to_generation_request("a", 1).sampling == body.to_sampling_params(1)
    shared = set(CompletionRequest.model_fields) & {
        f.name for f in dataclasses.fields(SamplingParams)}
    assert shared == set(COMMON) | set(CHAT_ONLY) | {"stop", "logprobs", "logit_bias"}
