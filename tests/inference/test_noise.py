"""The counter-based sampling noise: exact 32-bit arithmetic, a function of (key, token id) alone,
Exp(1)-distributed, and an exponential race over it that picks tokens with their probabilities."""

from __future__ import annotations

import random

import torch

from inference.noise import MASK32, exponential_noise, mix32, mul32, row_key


def test_products_wrap_at_32_bits_without_overflow():
    rng = random.Random(0)
    values = [0, 1, MASK32] + [rng.getrandbits(32) for _ in range(500)]
    for c in (0x85EBCA6B, 0xC2B2AE35, 0x9E3779B1, MASK32):
        expected = [(v * c) & MASK32 for v in values]
        assert [mul32(v, c) for v in values] == expected
        assert mul32(torch.tensor(values), c).tolist() == expected


def test_tensor_and_int_hashes_agree_and_spread():
    values = list(range(1000))
    hashed = mix32(torch.tensor(values)).tolist()
    assert hashed == [mix32(v) for v in values]
    assert len(set(hashed)) == len(values)  # a bijection
    assert all(0 <= h <= MASK32 for h in hashed)


def test_keys_depend_on_seed_and_step():
    keys = {row_key(seed, step) for seed in (0, 1, 2, -1, 2**63, 2**64 + 1) for step in range(50)}
    assert len(keys) == 6 * 50 - 50  # 2**64 + 1 folds to 1; everything else is distinct
    assert row_key(7, 3) == row_key(7, 3)


def test_noise_depends_on_key_and_id_only():
    keys = torch.tensor([[row_key(1, 0)], [row_key(2, 0)]])
    ids = torch.tensor([[5, 9, 11], [11, 5, 9]])
    noise = exponential_noise(keys, ids)
    alone = exponential_noise(keys[:1], torch.tensor([[11, 7]]))
    assert noise[0, 2] == alone[0, 0]  # the same token under the same key: the same number
    assert noise[0, 0] != noise[1, 1]  # another key: another number


def test_noise_is_exponential():
    keys = torch.tensor([[row_key(s, 0)] for s in range(4)])
    noise = exponential_noise(keys, torch.arange(50_000).expand(4, -1))
    assert noise.min() > 0 and torch.isfinite(noise).all()
    assert abs(noise.mean().item() - 1.0) < 0.01 and abs(noise.var().item() - 1.0) < 0.03
    uniform = torch.exp(-noise).flatten()
    counts = torch.histc(uniform, bins=20, min=0.0, max=1.0)
    expected = uniform.numel() / 20
    assert ((counts - expected) ** 2 / expected).sum() < 60  # chi-square, 19 degrees of freedom


def test_the_race_picks_tokens_with_their_probabilities():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    steps = 20_000
    keys = torch.tensor([[row_key(11, step)] for step in range(steps)])
    noise = exponential_noise(keys, torch.tensor([[40, 7, 1234, 99]]).expand(steps, -1))
    picks = torch.bincount((probs / noise).argmax(dim=-1), minlength=4)
    assert torch.allclose(picks / steps, probs, atol=0.015)
