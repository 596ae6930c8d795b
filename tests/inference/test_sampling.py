"""Batched sampling: the pure row functions (penalties, truncation) and the sampler over a batch
(greedy, seeds independent of the batch, logprobs, padding ids, per-row failures)."""

from __future__ import annotations

import math

import pytest
import torch

from inference.detokenizer import IncrementalDetokenizer
from inference.sampling import (
    Sampler,
    apply_presence_frequency,
    apply_repetition_penalty,
    truncate_sorted,
)
from inference.sequence import Sequence
from inference.types import SamplingParams

NEG = float("-inf")


def col(*values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype).unsqueeze(1)


def kept(values, top_k=0, top_p=1.0, min_p=0.0):
    out = truncate_sorted(torch.tensor([values]), col(top_k, dtype=torch.long), col(top_p),
                          col(min_p))
    return torch.isfinite(out[0]).tolist()


def test_top_k_keeps_k_largest():
    assert kept([4.0, 3.0, 2.0, 1.0], top_k=2) == [True, True, False, False]
    assert kept([2.0, 1.0], top_k=0) == [True, True]


def test_top_p_keeps_smallest_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).tolist()
    assert kept(logits, top_p=0.8) == [True, True, False, False]
    assert kept(logits, top_p=0.01) == [True, False, False, False]


def test_min_p_relative_to_top():
    logits = torch.log(torch.tensor([0.6, 0.3, 0.1])).tolist()
    assert kept(logits, min_p=0.4) == [True, True, False]


def test_rows_truncate_independently():
    values = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]))
    out = truncate_sorted(values, col(1, 0, dtype=torch.long), col(1.0, 1.0), col(0.0, 0.0))
    assert torch.isfinite(out).tolist() == [[True, False, False], [True, True, True]]


def test_repetition_penalty_signs():
    logits = torch.tensor([[2.0, -2.0, 2.0]])
    seen = torch.tensor([[True, True, False]])
    assert apply_repetition_penalty(logits, seen, col(2.0)).tolist() == [[1.0, -4.0, 2.0]]


def test_presence_and_frequency():
    out = apply_presence_frequency(torch.zeros(1, 3), torch.tensor([[0, 1, 3]]), col(0.5), col(0.25))
    assert out.tolist() == [[0.0, -0.75, -1.25]]


def seq(**params) -> Sequence:
    return Sequence("r", [1, 2], SamplingParams(max_tokens=4, **params), set(),
                    IncrementalDetokenizer(None), lambda chunk: None)


def sample(sampler, logits, seqs):
    for s in seqs:
        sampler.prepare(s)
    return sampler(logits.clone(), seqs)


def test_seeded_row_does_not_depend_on_the_batch():
    sampler = Sampler(1000, 1000, torch.device("cpu"), str)
    logits = torch.randn(3, 1000, generator=torch.Generator().manual_seed(1))
    free = dict(temperature=1.0, top_k=0, top_p=1.0)
    alone = sample(sampler, logits[:1], [seq(seed=7, **free)]).token_ids[0]
    mixed = sample(sampler, logits, [seq(seed=7, **free), seq(**free), seq(temperature=0.0)])
    assert mixed.token_ids[0] == alone
    assert mixed.token_ids[2] == int(logits[2].argmax())
    draws = {sample(sampler, logits[:1], [seq(seed=s, **free)]).token_ids[0] for s in range(8)}
    assert len(draws) > 1  # seeds matter


def test_logprobs_and_invalid_tail():
    sampler = Sampler(10, 8, torch.device("cpu"), str)
    logits = torch.zeros(1, 10)
    logits[0, 9] = 100.0  # a padding id past the tokenizer: never chosen
    logits[0, 3] = 1.0
    picked = sample(sampler, logits, [seq(temperature=0.0, logprobs=2)])
    assert picked.token_ids == [3]
    lp = picked.logprobs[0]
    assert len(lp.top) == 2 and lp.top[0][0] == 3
    assert math.isclose(math.exp(lp.top[0][2]), math.exp(lp.logprob))


def test_a_failing_processor_fails_its_rows_only():
    def explode(output_ids, logits):
        raise RuntimeError("boom")

    sampler = Sampler(10, 10, torch.device("cpu"), str)
    picked = sample(sampler, torch.randn(2, 10),
                    [seq(temperature=0.0, logits_processors=[explode]), seq(temperature=0.0)])
    assert "boom" in picked.errors[0] and 1 not in picked.errors


def test_rows_with_nothing_to_choose_fail_with_their_reason():
    sampler = Sampler(6, 6, torch.device("cpu"), str)
    logits = torch.randn(4, 6)
    logits[0] = NEG  # every token masked out
    logits[1, 2] = float("nan")  # the model overflowed
    free = dict(temperature=1.0, top_k=0, top_p=1.0, seed=3)
    picked = sample(sampler, logits, [seq(**free), seq(**free), seq(**free), seq(temperature=0)])
    assert picked.token_ids[:2] == [-1, -2]
    assert "masked out" in picked.errors[0] and "NaN" in picked.errors[1]
    assert sorted(picked.errors) == [0, 1] and picked.token_ids[3] == int(logits[3].argmax())



@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the fused sampling kernels")
@pytest.mark.parametrize("rows", [1, 8, 64])
def test_the_fused_draw_picks_what_the_pytorch_draw_picks(rows):
    """kernels/sampling.py against `Sampler._draw` on Qwen3's vocabulary: the same tokens and
    the same verdicts, for mixed top_k, top_p, min_p and temperatures, a row with three finite
    logits (a grammar's mask) and one with none."""
    from types import SimpleNamespace

    from inference.kernels import sampling as kernels
    from inference.noise import row_key

    vocab = 151936
    sampler = Sampler(vocab, vocab, torch.device("cuda"), str)
    generator = torch.Generator(device="cuda").manual_seed(rows)
    logits = 3 * torch.randn(rows, vocab, generator=generator, device="cuda")
    if rows > 2:
        logits[1] = NEG
        logits[1, [5, 70_000, 151_000]] = torch.tensor([0.5, 2.0, 1.0], device="cuda")
        logits[2] = NEG
    cpu = torch.Generator().manual_seed(rows)
    ks = torch.randint(2, 65, (rows,), generator=cpu).tolist()
    ps = [SimpleNamespace(temperature=float(t), top_p=float(p), min_p=float(m)) for t, p, m in
          zip(0.2 + 1.5 * torch.rand(rows, generator=cpu), 0.3 + 0.7 * torch.rand(rows, generator=cpu),
              0.2 * torch.rand(rows, generator=cpu), strict=True)]
    keys = [row_key(seed, 7) for seed in range(rows)]
    want = sampler._draw(logits, max(ks), ps, ks, keys)
    got = kernels.draw(logits, max(ks), torch.tensor(keys, device="cuda"),
                       torch.tensor([[p.temperature, p.top_p, p.min_p] for p in ps], device="cuda"),
                       torch.tensor(ks, dtype=torch.int32, device="cuda"))
    ok = want[1]
    assert torch.equal(got[1], ok)
    assert torch.equal(got[0][ok], want[0][ok])
    assert sampler.use_kernels() and sampler.kernels is kernels
