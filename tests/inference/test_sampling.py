"""Pure sampling functions: penalties and truncation filters."""

from __future__ import annotations

import math

import torch

from inference.sampling import (
    Sampler,
    apply_presence_frequency,
    apply_repetition_penalty,
    filter_min_p,
    filter_top_k,
    filter_top_p,
)
from inference.types import SamplingParams

NEG = float("-inf")


def test_top_k_keeps_k_largest():
    out = filter_top_k(torch.tensor([1.0, 4.0, 3.0, 2.0]), 2)
    assert out.tolist() == [NEG, 4.0, 3.0, NEG]
    assert filter_top_k(torch.tensor([1.0, 2.0]), 0).tolist() == [1.0, 2.0]


def test_top_p_keeps_smallest_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = torch.isfinite(filter_top_p(logits, 0.8)).tolist()
    assert kept == [True, True, False, False]
    assert torch.isfinite(filter_top_p(logits, 0.01)).tolist() == [True, False, False, False]


def test_min_p_relative_to_top():
    logits = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    assert torch.isfinite(filter_min_p(logits, 0.4)).tolist() == [True, True, False]


def test_repetition_penalty_signs():
    logits = torch.tensor([2.0, -2.0, 2.0])
    seen = torch.tensor([True, True, False])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [1.0, -4.0, 2.0]


def test_presence_and_frequency():
    logits = torch.zeros(3)
    counts = torch.tensor([0, 1, 3])
    out = apply_presence_frequency(logits, counts, presence=0.5, frequency=0.25)
    assert out.tolist() == [0.0, -0.75, -1.25]


def test_sampler_seeded_is_reproducible_and_greedy_is_argmax():
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=7)
    first = [Sampler(params, 1000, torch.device("cpu"), []).choose(logits) for _ in range(3)]
    assert len(set(first)) == 1
    greedy = Sampler(SamplingParams(temperature=0.0), 1000, torch.device("cpu"), [])
    assert greedy.choose(logits) == int(torch.argmax(logits))


def test_sampler_logprobs_and_invalid_tail():
    params = SamplingParams(temperature=0.0, logprobs=2)
    sampler = Sampler(params, 10, torch.device("cpu"), [], valid_vocab=8)
    logits = torch.zeros(10)
    logits[9] = 100.0  # a padding id past the tokenizer: never chosen
    logits[3] = 1.0
    picked = sampler(logits, [], decode=str)
    assert picked.token_id == 3
    assert picked.logprob is not None and len(picked.logprob.top) == 2
    assert picked.logprob.top[0][0] == 3
    assert math.isclose(sum(math.exp(lp) for _, _, lp in picked.logprob.top[:1]),
                        math.exp(picked.logprob.logprob))
