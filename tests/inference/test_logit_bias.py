"""OpenAI's logit_bias in the batched sampler: a sparse per-row add, before anything else, that
leaves the other rows alone; and the engine refuses token ids outside the vocabulary."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from inference import GenerationRequest, InvalidRequestError, SamplingParams
from inference.sampling import Sampler, apply_logit_bias


def test_apply_logit_bias_adds_per_row_and_accumulates():
    logits = torch.zeros(2, 5)
    apply_logit_bias(logits, torch.tensor([0, 0, 1, 1]), torch.tensor([1, 3, 3, 3]),
                     torch.tensor([-100.0, 2.5, 1.0, 1.0]))
    assert logits.tolist() == [[0, -100, 0, 2.5, 0], [0, 0, 0, 2.0, 0]]


def row(bias=None, temperature=0.0):
    params = SamplingParams(temperature=temperature, logit_bias=bias)
    return SimpleNamespace(params=params, counts=None, matcher=None, output_ids=[],
                           generator=None)


def test_the_sampler_biases_only_the_rows_that_ask():
    sampler = Sampler(vocab_size=6, valid_vocab=5, device=torch.device("cpu"), decode=str)
    logits = torch.tensor([[0.0, 3.0, 1.0, 0.0, 0.0, 0.0]] * 3)
    seqs = [row({1: -100.0, 4: 100.0}), row(), row({2: 5.0})]
    sampler.adjust(logits, seqs, errors := {})
    assert not errors
    assert logits[0, :5].tolist() == [0.0, -97.0, 1.0, 0.0, 100.0]
    assert logits[1, :5].tolist() == [0.0, 3.0, 1.0, 0.0, 0.0]
    assert logits[2, :5].tolist() == [0.0, 3.0, 6.0, 0.0, 0.0]
    assert torch.isinf(logits[:, 5]).all()  # a padding id stays impossible, biased or not
    assert sampler.choose(logits, seqs).tolist() == [4, 1, 2]


@pytest.mark.parametrize("token", [-1, 151669, 10**7])
async def test_the_engine_refuses_ids_outside_the_vocabulary(builtin_engine, token):
    sampling = SamplingParams(max_tokens=1, logit_bias={token: 1.0})
    with pytest.raises(InvalidRequestError) as info:
        await builtin_engine.asubmit(GenerationRequest(prompt="x", sampling=sampling))
    assert info.value.param == "logit_bias"
