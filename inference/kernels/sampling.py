"""Sampling's top-k and draw in two kernels (GPU): what `Sampler.choose` does for the rows that
sample, for batches whose top_k are all at most MAX_K (the default model's is 20).

The PyTorch form took about 0.2 ms of device time after one stream's graph (about 40 small
kernels, and a multi-block radix top-k over the 151,936 ids, 57 µs alone:
bench/results/profile-one-stream-h200.json, topk-h200.json). Here:
- `_chunk_top_kernel`: one program per row and CHUNK ids takes the `width` largest logits of its
  chunk, one maximum at a time (the first of equal ones);
- `_draw_kernel`: one program per row takes the `width` largest of those, in descending order, and
  does what `truncate_sorted` and the exponential race do in sampling.py, on the same numbers:
  temperature, top-k, top-p (the smallest prefix reaching p, at least one token), min-p, softmax,
  then the token whose probability over its Exp(1) noise (noise.py's hash of the row's key and
  the token id, in 32-bit arithmetic) is largest.
It gives each row's pick and whether its distribution was sound (finite, positive), as the
PyTorch form does; rows with nothing to choose keep the failure codes `choose` gave them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

CHUNK = 2048  # ids per program of the first kernel
MAX_K = 64  # the largest top_k taken here; beyond it the PyTorch form runs
CANDIDATES = 8192  # the second kernel's width: chunks × top_k must fit (151,936 ids: 75 × 64)


def fits(vocab: int, width: int) -> bool:
    """Whether these kernels take a batch of `vocab` logits whose widest top_k is `width`."""
    return 1 <= width <= MAX_K and -(-vocab // CHUNK) * width <= CANDIDATES


@triton.jit(do_not_specialize=["vocab", "width", "count"])
def _chunk_top_kernel(logits_ptr, stride, vocab, width, count, values_ptr, ids_ptr,
                      CHUNK: tl.constexpr):
    """values/ids[row, chunk * width + i]: the i-th largest logit of the chunk and its id."""
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    offs = tl.arange(0, CHUNK)
    ids = chunk * CHUNK + offs
    x = tl.load(logits_ptr + row.to(tl.int64) * stride + ids, mask=ids < vocab,
                other=float("-inf")).to(tl.float32)
    out = row.to(tl.int64) * count + chunk * width
    for i in range(width):
        best, at = tl.max(x, 0, return_indices=True, return_indices_tie_break_left=True)
        tl.store(values_ptr + out + i, best)
        tl.store(ids_ptr + out + i, chunk * CHUNK + at)
        x = tl.where(offs == at, float("-inf"), x)


@triton.jit
def _softmax(x):
    e = tl.exp(x - tl.max(x, 0))
    return e / tl.sum(e, 0)


@triton.jit
def _mix32(h):
    h = h ^ (h >> 16)
    h = h * 0x85EBCA6B
    h = h ^ (h >> 13)
    h = h * 0xC2B2AE35
    return h ^ (h >> 16)


@triton.jit(do_not_specialize=["width", "count"])
def _draw_kernel(values_ptr, ids_ptr, width, count, keys_ptr, floats_ptr, top_k_ptr, picked_ptr,
                 ok_ptr, CANDIDATES: tl.constexpr, MAX_K: tl.constexpr):
    """picked[row], ok[row] from the row's chunk candidates (see the module's docstring)."""
    row = tl.program_id(0)
    offs = tl.arange(0, CANDIDATES)
    base = row.to(tl.int64) * count
    v = tl.load(values_ptr + base + offs, mask=offs < count, other=float("-inf"))
    pos = tl.arange(0, MAX_K)
    top = tl.full([MAX_K], float("-inf"), tl.float32)
    top_ids = tl.zeros([MAX_K], tl.int32)
    for i in range(width):
        best, at = tl.max(v, 0, return_indices=True, return_indices_tie_break_left=True)
        top = tl.where(pos == i, best, top)
        top_ids = tl.where(pos == i, tl.load(ids_ptr + base + at), top_ids)
        v = tl.where(offs == at, float("-inf"), v)
    temperature = tl.load(floats_ptr + 3 * row)
    top_p = tl.load(floats_ptr + 3 * row + 1)
    min_p = tl.load(floats_ptr + 3 * row + 2)
    top_k = tl.load(top_k_ptr + row)
    values = top / temperature
    values = tl.where((top_k > 0) & (pos >= top_k), float("-inf"), values)
    probs = _softmax(values)
    before = tl.cumsum(probs, 0) - probs
    values = tl.where((before >= top_p) & (pos > 0), float("-inf"), values)
    probs = _softmax(values)
    first = tl.sum(tl.where(pos == 0, probs, 0.0), 0)
    values = tl.where(probs < min_p * first, float("-inf"), values)
    probs = _softmax(values)
    key = tl.load(keys_ptr + row).to(tl.uint32)
    h = _mix32(key ^ (top_ids.to(tl.uint32) * 0x9E3779B1))
    uniform = ((h >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)
    score = probs / -tl.log(uniform)
    chosen = tl.argmax(score, 0)
    tl.store(picked_ptr + row, tl.sum(tl.where(pos == chosen, top_ids, 0), 0))
    finite = tl.sum(tl.where((probs == probs) & (tl.abs(probs) < float("inf")), 1, 0), 0)
    tl.store(ok_ptr + row, (finite == MAX_K) & (tl.sum(probs, 0) > 0))


def draw(logits: torch.Tensor, width: int, keys: torch.Tensor, floats: torch.Tensor,
         top_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's pick (int64) and whether its distribution was sound (bool), for `logits`
    (rows, vocab) float32 on a GPU; `keys` (rows,) int64 noise keys, `floats` (rows, 3) float32
    temperature, top_p and min_p, `top_k` (rows,) int32 (0: off). `fits(vocab, width)` must hold."""
    rows, vocab = logits.shape
    chunks = -(-vocab // CHUNK)
    count = chunks * width
    values = torch.empty(rows * count, dtype=torch.float32, device=logits.device)
    ids = torch.empty(rows * count, dtype=torch.int32, device=logits.device)
    _chunk_top_kernel[(rows, chunks)](logits, logits.stride(0), vocab, width, count, values, ids,
                                      CHUNK=CHUNK, num_warps=4)
    picked = torch.empty(rows, dtype=torch.int32, device=logits.device)
    ok = torch.empty(rows, dtype=torch.bool, device=logits.device)
    _draw_kernel[(rows,)](values, ids, width, count, keys, floats, top_k, picked, ok,
                          CANDIDATES=CANDIDATES, MAX_K=MAX_K, num_warps=8)
    return picked.long(), ok
