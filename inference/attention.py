"""Attention over the paged KV cache, in plain PyTorch (scaled_dot_product_attention), so the same
code runs on CPUs and GPUs with no compiled extension.

One step's tokens are flattened into one row of T tokens. New keys and values are written into the
pool at their slots (`slot_mapping`); each query then reads its sequence's keys and values through
the sequence's slots (block table × block size + offset):
- decode rows (one new token each) are grouped by context length and attended in one call per
  group, keys gathered into a padded batch with a padding mask; queries of one KV head are folded
  into the query-length axis, so grouped-query attention needs no copy of the keys;
- prefill chunks (several new tokens of one sequence) attend causally, aligned to the end of the
  context (`causal_lower_right`), so a chunk sees the cached prefix and itself.
`AttentionMetadata` is built once per step by the runner and passed down explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right


@dataclass
class DecodeGroup:
    rows: torch.Tensor  # indices into the step's tokens
    slots: torch.Tensor  # (rows, max_context) slot of each context position (0 where padded)
    mask: torch.Tensor  # (rows, 1, 1, max_context) True where a position is real


@dataclass
class PrefillChunk:
    start: int  # first of its tokens in the step
    length: int  # tokens computed in this step
    slots: torch.Tensor  # (context,) slots of the whole context, this chunk included


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # (T,) where each new token's key and value go
    decode: list[DecodeGroup] = field(default_factory=list)
    prefill: list[PrefillChunk] = field(default_factory=list)


def group_by_length(lengths: list[int], ratio: float = 2.0) -> list[list[int]]:
    """Indices of `lengths` in groups whose longest is at most `ratio` times the shortest, so that
    padding to the longest never wastes more than about half of a gather."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] <= ratio * max(lengths[groups[-1][0]], 1):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Store the step's keys and values (T, kv_heads, head_dim) in the pool (slots, kv_heads, dim)."""
    k_cache.index_copy_(0, slot_mapping, k.to(k_cache.dtype))
    v_cache.index_copy_(0, slot_mapping, v.to(v_cache.dtype))


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    meta: AttentionMetadata, scale: float) -> torch.Tensor:
    """Attention output (T, heads, head_dim) for the step's queries (T, heads, head_dim)."""
    out = torch.empty_like(q)
    heads, kv_heads, dim = q.shape[1], k_cache.shape[1], q.shape[2]
    group = heads // kv_heads
    for g in meta.decode:
        rows = g.rows.numel()
        keys = k_cache[g.slots].permute(0, 2, 1, 3)  # (rows, kv_heads, ctx, dim)
        values = v_cache[g.slots].permute(0, 2, 1, 3)
        query = q[g.rows].view(rows, kv_heads, group, dim).to(keys.dtype)
        o = F.scaled_dot_product_attention(query, keys, values, attn_mask=g.mask, scale=scale)
        out[g.rows] = o.reshape(rows, heads, dim).to(out.dtype)
    for c in meta.prefill:
        context = c.slots.numel()
        keys = k_cache[c.slots].transpose(0, 1).unsqueeze(0)  # (1, kv_heads, ctx, dim)
        values = v_cache[c.slots].transpose(0, 1).unsqueeze(0)
        query = q[c.start:c.start + c.length].transpose(0, 1).unsqueeze(0).to(keys.dtype)
        if group > 1:  # the fused kernels take causal masks without GQA: expand the heads
            keys = keys.repeat_interleave(group, dim=1)
            values = values.repeat_interleave(group, dim=1)
        mask = causal_lower_right(c.length, context) if c.length > 1 else None
        o = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=scale)
        out[c.start:c.start + c.length] = o[0].transpose(0, 1).to(out.dtype)
    return out
