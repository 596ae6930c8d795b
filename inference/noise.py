"""Counter-based random numbers for sampling: the exponential noise of a token is a hash of the
request's seed, the index of the token being sampled and the token's id, so one elementwise pass
computes it for every row of a batch at once, and a seeded request draws the same numbers alone or
amid other requests, whatever the width of its candidate set, and again after a preemption.

The hash is murmur3's 32-bit finaliser, a bijection with full avalanche, evaluated on int64 tensors
holding 32-bit values; products are split so that no intermediate overflows 63 bits. The same
functions run on Python ints (for a row's key, made on the host) and on tensors (per token).
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1  # odd: multiplying by it permutes 32-bit values
_STEP = 0x27D4EB2F


def mul32(h, c: int):
    """(h × c) mod 2³² for h < 2³² (an int or an int64 tensor) and a 32-bit constant c."""
    lo, hi = c & 0xFFFF, c >> 16
    return (h * lo + (((h * hi) & 0xFFFF) << 16)) & MASK32


def mix32(h):
    """murmur3's finaliser: each input bit flips each output bit with probability about 1/2."""
    h = h ^ (h >> 16)
    h = mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def row_key(seed: int, step: int) -> int:
    """The 32-bit key of one sampling step of a request: its seed (any int, folded to 64 bits)
    and the index of the token being sampled."""
    seed &= (1 << 64) - 1
    key = mix32(mix32(seed & MASK32) ^ (seed >> 32))
    return mix32(key ^ mul32((step + 1) & MASK32, _STEP))


def exponential_noise(keys: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Exp(1) noise (rows, width), float32, for token `ids` (rows, width) under each row's key
    (rows, 1): a function of (key, id) alone."""
    h = mix32(keys ^ mul32(ids.to(torch.int64) & MASK32, _GOLDEN))
    uniform = ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))  # in (0, 1), never 0
    return -torch.log(uniform)
