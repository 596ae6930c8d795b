"""The glue between the matrix products, fused into a few Triton kernels (one pass each):

- `add_rms_norm`: the residual add and the RMSNorm after it (Qwen3's `Qwen3RMSNorm`: normalise in
  fp32, round to the compute dtype, then multiply by the weight);
- `qk_norm_rope_store`: per-head RMSNorm of queries and keys, the rotary embedding of both, and the
  write of the new keys and values into the paged cache at their slots;
- `silu_mul`: SiLU(gate) × up of the MLP.

Each replaces several eager kernels (and their launches) per layer.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rms_norm_kernel(x_ptr, residual_ptr, weight_ptr, out_ptr, N, eps,
                         HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(x_ptr + row * N + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        x = (x + tl.load(residual_ptr + row * N + cols, mask=mask, other=0.0))
        tl.store(residual_ptr + row * N + cols, x, mask=mask)
    xf = x.to(tl.float32)
    variance = tl.sum(xf * xf, axis=0) / N
    normed = (xf * tl.rsqrt(variance + eps)).to(x.dtype)
    weight = tl.load(weight_ptr + cols, mask=mask, other=0.0)
    tl.store(out_ptr + row * N + cols, (weight * normed).to(out_ptr.dtype.element_ty), mask=mask)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSNorm(x + residual), x + residual); the sum is written into `residual` when given, else
    `x` becomes the residual."""
    rows, n = x.shape
    out = torch.empty_like(x)
    _add_rms_norm_kernel[(rows,)](x, residual if residual is not None else x, weight, out, n, eps,
                                  HAS_RESIDUAL=residual is not None,
                                  BLOCK=triton.next_power_of_2(n), num_warps=8 if n > 2048 else 4)
    return out, (residual if residual is not None else x)


@triton.jit
def _norm_rope(x, weight, cos, sin, eps, D: tl.constexpr):
    """RMSNorm over the last axis of x (H, D), then the rotary embedding (half-split layout)."""
    xf = x.to(tl.float32)
    variance = tl.sum(xf * xf, axis=1) / D
    normed = (xf * tl.rsqrt(variance + eps)[:, None]).to(x.dtype)
    y = (weight[None, :] * normed).to(tl.float32)
    first, second = tl.split(tl.reshape(y, (y.shape[0], 2, D // 2)).permute(0, 2, 1))
    rotated = tl.reshape(tl.join(-second, first).permute(0, 2, 1), (y.shape[0], D))
    return y * cos[None, :] + rotated * sin[None, :]


@triton.jit
def _qk_norm_rope_store_kernel(q_ptr, k_ptr, v_ptr, q_out_ptr, k_cache_ptr, v_cache_ptr,
                               q_weight_ptr, k_weight_ptr, inv_freq_ptr, positions_ptr,
                               slots_ptr, eps, rope_scale, q_stride, k_stride, v_stride,
                               HEADS: tl.constexpr, KV_HEADS: tl.constexpr, D: tl.constexpr,
                               HEADS_PAD: tl.constexpr, KV_PAD: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    d = tl.arange(0, D)
    pos = tl.load(positions_ptr + token).to(tl.float32)
    freq = pos * tl.load(inv_freq_ptr + d % (D // 2))
    cos = tl.cos(freq) * rope_scale
    sin = tl.sin(freq) * rope_scale
    # Rounded to the compute dtype as the eager model's cos and sin are.
    cos = cos.to(q_out_ptr.dtype.element_ty).to(tl.float32)
    sin = sin.to(q_out_ptr.dtype.element_ty).to(tl.float32)

    heads = tl.arange(0, HEADS_PAD)
    q_mask = (heads < HEADS)[:, None]
    q = tl.load(q_ptr + token * q_stride + heads[:, None] * D + d[None, :], mask=q_mask, other=0.0)
    q = _norm_rope(q, tl.load(q_weight_ptr + d), cos, sin, eps, D)
    tl.store(q_out_ptr + (token * HEADS + heads[:, None]) * D + d[None, :],
             q.to(q_out_ptr.dtype.element_ty), mask=q_mask)

    kv = tl.arange(0, KV_PAD)
    kv_mask = (kv < KV_HEADS)[:, None]
    k = tl.load(k_ptr + token * k_stride + kv[:, None] * D + d[None, :], mask=kv_mask, other=0.0)
    k = _norm_rope(k, tl.load(k_weight_ptr + d), cos, sin, eps, D)
    slot = tl.load(slots_ptr + token).to(tl.int64)
    cache_index = (slot * KV_HEADS + kv[:, None]) * D + d[None, :]
    tl.store(k_cache_ptr + cache_index, k.to(k_cache_ptr.dtype.element_ty), mask=kv_mask)
    v = tl.load(v_ptr + token * v_stride + kv[:, None] * D + d[None, :], mask=kv_mask, other=0.0)
    tl.store(v_cache_ptr + cache_index, v.to(v_cache_ptr.dtype.element_ty), mask=kv_mask)


def qk_norm_rope_store(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_weight: torch.Tensor,
                       k_weight: torch.Tensor, eps: float, inv_freq: torch.Tensor,
                       rope_scale: float, positions: torch.Tensor, slots: torch.Tensor,
                       k_cache: torch.Tensor, v_cache: torch.Tensor, heads: int,
                       head_dim: int) -> torch.Tensor:
    """Queries (T, heads, D) normalised and rotated; keys likewise and values as they are, stored
    in the cache at `slots`. q, k, v are (T, ·) views whose rows may be strided (a fused QKV)."""
    tokens = q.shape[0]
    q_out = torch.empty((tokens, heads, head_dim), dtype=q.dtype, device=q.device)
    kv_heads = k_cache.shape[1]
    _qk_norm_rope_store_kernel[(tokens,)](
        q, k, v, q_out, k_cache, v_cache, q_weight, k_weight, inv_freq, positions, slots, eps,
        rope_scale, q.stride(0), k.stride(0), v.stride(0), HEADS=heads, KV_HEADS=kv_heads,
        D=head_dim, HEADS_PAD=triton.next_power_of_2(heads),
        KV_PAD=triton.next_power_of_2(kv_heads), num_warps=4)
    return q_out


@triton.jit
def _silu_mul_kernel(gate_ptr, up_ptr, out_ptr, N, gate_stride, up_stride,
                     BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < N
    gate = tl.load(gate_ptr + row * gate_stride + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(up_ptr + row * up_stride + cols, mask=mask, other=0.0)
    act = (gate / (1.0 + tl.exp(-gate))).to(up.dtype)
    tl.store(out_ptr + row * N + cols, act * up, mask=mask)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    rows, n = gate.shape
    out = torch.empty((rows, n), dtype=up.dtype, device=up.device)
    block = 1024
    _silu_mul_kernel[(rows, triton.cdiv(n, block))](gate, up, out, n, gate.stride(0),
                                                    up.stride(0), BLOCK=block)
    return out
