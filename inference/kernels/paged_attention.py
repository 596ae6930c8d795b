"""Attention over the paged KV cache in one Triton kernel, for decode rows and prompt chunks alike.

The step's queries are cut into tiles of `block_q` tokens of one sequence; a program takes one tile
and one KV head, folds that head's query heads into the rows (grouped-query attention without
copying keys), and walks the sequence's keys and values through its block table with an online
softmax, stopping at the causal limit of the tile's last token. Every tensor it reads is given as
device memory (tile map, lengths, block tables, even the table's row stride), so a launch can be
captured in a CUDA graph and replayed with new metadata.

The context can also be split into `parts` walked by separate programs and merged by
`_merge_kernel` (flash-decoding), so that a few rows over a long context still keep every
multiprocessor busy: decode rows, and prompt chunks whose tiles are too few for the card (a chunk
of a long prompt beside running streams).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


def dot_precision(dtype: torch.dtype) -> str:
    """float32 inputs are multiplied in full precision (not TF32): the CPU path's numbers."""
    return "ieee" if dtype == torch.float32 else "tf32"


@triton.jit(do_not_specialize=["part_base"])
def _attention_kernel(q_ptr, k_ptr, v_ptr, out_ptr, part_acc, part_m, part_l, part_base,
                      tile_seq_ptr, tile_q0_ptr, q_start_ptr, q_len_ptr, ctx_ptr, table_ptr,
                      table_stride_ptr, scale,
                      HEADS: tl.constexpr, KV_HEADS: tl.constexpr, GROUP: tl.constexpr,
                      D: tl.constexpr, BLOCK: tl.constexpr, BLOCK_Q: tl.constexpr,
                      ROWS: tl.constexpr, TILE_T: tl.constexpr, PARTS: tl.constexpr,
                      PRECISION: tl.constexpr):
    tile = tl.program_id(0)
    h = tl.program_id(1)
    part = tl.program_id(2)
    seq = tl.load(tile_seq_ptr + tile)
    q0 = tl.load(tile_q0_ptr + tile)  # first query of the tile, counted within its sequence
    q_start = tl.load(q_start_ptr + seq)
    q_len = tl.load(q_len_ptr + seq)
    context = tl.load(ctx_ptr + seq)
    table_stride = tl.load(table_stride_ptr)

    rows = tl.arange(0, ROWS)
    token = q0 + rows // GROUP  # within the sequence's queries of this step
    head = h * GROUP + rows % GROUP
    row_ok = (rows < BLOCK_Q * GROUP) & (token < q_len)
    q_pos = context - q_len + token  # absolute position of each row's query
    d = tl.arange(0, D)
    q_index = (q_start + token).to(tl.int64) * HEADS + head
    q = tl.load(q_ptr + q_index[:, None] * D + d[None, :], mask=row_ok[:, None], other=0.0)

    last = tl.minimum(context, context - q_len + tl.minimum(q0 + BLOCK_Q, q_len))  # keys to read
    last = tl.where(q0 < q_len, last, 0)  # a tile of padding only (a graph's) reads nothing
    per_part = tl.cdiv(tl.cdiv(last, PARTS), TILE_T) * TILE_T
    begin = part * per_part
    end = tl.minimum(begin + per_part, last)

    m_i = tl.full((ROWS,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((ROWS,), dtype=tl.float32)
    acc = tl.zeros((ROWS, D), dtype=tl.float32)
    t = tl.arange(0, TILE_T)
    for t0 in range(begin, end, TILE_T):
        pos = t0 + t
        valid = pos < end
        block = tl.load(table_ptr + seq.to(tl.int64) * table_stride + pos // BLOCK, mask=valid,
                        other=0)
        slot = block.to(tl.int64) * BLOCK + pos % BLOCK
        kv_index = (slot * KV_HEADS + h)[:, None] * D + d[None, :]
        k = tl.load(k_ptr + kv_index, mask=valid[:, None], other=0.0)
        v = tl.load(v_ptr + kv_index, mask=valid[:, None], other=0.0)
        scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        allowed = valid[None, :] & (pos[None, :] <= q_pos[:, None])
        scores = tl.where(allowed, scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing allowed yet
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(scores - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    if PARTS == 1:
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(out_ptr + q_index[:, None] * D + d[None, :], out.to(out_ptr.dtype.element_ty),
                 mask=row_ok[:, None])
    else:
        # (query token, head, part), counted from the launch's first token (part_base = its
        # index × HEADS): the partial buffers hold only this launch's tokens
        part_index = (q_index - part_base) * PARTS + part
        tl.store(part_acc + part_index[:, None] * D + d[None, :], acc, mask=row_ok[:, None])
        tl.store(part_m + part_index, m_i, mask=row_ok)
        tl.store(part_l + part_index, l_i, mask=row_ok)


@triton.jit(do_not_specialize=["first"])
def _merge_kernel(part_acc, part_m, part_l, out_ptr, first, D: tl.constexpr,
                  PARTS: tl.constexpr):
    """Combine the parts of one (token, head) of a launch, softmax-weighted by each part's running
    maximum; `first` is the launch's first token × heads, where its outputs start."""
    index = tl.program_id(0).to(tl.int64)
    parts = tl.arange(0, PARTS)
    m = tl.load(part_m + index * PARTS + parts)
    top = tl.max(m, axis=0)
    weight = tl.where(m == float("-inf"), 0.0, tl.exp(m - top))
    total = tl.sum(tl.load(part_l + index * PARTS + parts) * weight, axis=0)
    d = tl.arange(0, D)
    acc = tl.load(part_acc + (index * PARTS + parts)[:, None] * D + d[None, :])
    out = tl.sum(acc * weight[:, None], axis=0) / tl.where(total == 0.0, 1.0, total)
    tl.store(out_ptr + (index + first) * D + d, out.to(out_ptr.dtype.element_ty))


@dataclass
class AttentionTiles:
    """Device metadata for one launch: per tile (its sequence and first query), per sequence
    (first query in the step, queries this step, context length, block table row)."""

    tile_seq: torch.Tensor
    tile_q0: torch.Tensor
    q_start: torch.Tensor
    q_len: torch.Tensor
    context: torch.Tensor
    block_tables: torch.Tensor  # flat; row i at i × table_stride
    table_stride: torch.Tensor  # (1,) int32, read by the kernel
    block_q: int
    parts: int = 1
    # With parts: the step's tokens the launch covers (its tiles' queries), to merge. 0 tokens:
    # the step's first `num_tiles` tokens, one a tile (decode tiles, as the graphs give them).
    first_token: int = 0
    tokens: int = 0


def tile_plan(q_lens: list[int], block_q: int) -> tuple[list[int], list[int]]:
    """(sequence, first query) of every tile of `block_q` queries."""
    tile_seq, tile_q0 = [], []
    for i, n in enumerate(q_lens):
        for q0 in range(0, n, block_q):
            tile_seq.append(i)
            tile_q0.append(q0)
    return tile_seq, tile_q0


def decode_parts(batch: int, kv_heads: int, num_sms: int) -> int:
    """Context splits per decode row: enough programs to fill the card twice, at most 16."""
    parts = 1
    while parts < 16 and batch * kv_heads * parts < 2 * num_sms:
        parts *= 2
    return parts


PROMPT_PART_KEYS = 4096  # a prompt tile's context is split only into parts of at least this


def prompt_parts(num_tiles: int, kv_heads: int, num_sms: int, context: int) -> int:
    """Context splits per prompt tile: like decode_parts, while each part keeps enough keys for
    its walk to outweigh the merge."""
    parts = 1
    while (parts < 16 and num_tiles * kv_heads * parts < 2 * num_sms
           and context // (2 * parts) >= PROMPT_PART_KEYS):
        parts *= 2
    return parts


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    tiles: AttentionTiles, num_tiles: int, block_size: int, scale: float,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """Attention output (T, heads, D) for queries q (T, heads, D) over caches (slots, kv, D)."""
    _, heads, dim = q.shape
    kv_heads = k_cache.shape[1]
    group = heads // kv_heads
    out = torch.empty_like(q) if out is None else out
    rows = max(16, triton.next_power_of_2(tiles.block_q * group))
    tile_t = 64 if tiles.block_q > 1 else 32
    parts = tiles.parts
    if parts > 1 and tiles.block_q != 1 and not tiles.tokens:
        raise ValueError("prompt tiles split in parts need the tokens they cover")
    first, count = (tiles.first_token, tiles.tokens) if tiles.tokens else (0, num_tiles)
    if parts > 1:  # partials of this launch's tokens only
        part_acc = torch.empty((count * heads * parts, dim), dtype=torch.float32, device=q.device)
        part_m = torch.empty(count * heads * parts, dtype=torch.float32, device=q.device)
        part_l = torch.empty_like(part_m)
    else:
        part_acc = part_m = part_l = out  # unread
    _attention_kernel[(num_tiles, kv_heads, parts)](
        q, k_cache, v_cache, out, part_acc, part_m, part_l, first * heads, tiles.tile_seq,
        tiles.tile_q0, tiles.q_start, tiles.q_len, tiles.context, tiles.block_tables,
        tiles.table_stride, scale,
        HEADS=heads, KV_HEADS=kv_heads, GROUP=group, D=dim, BLOCK=block_size,
        BLOCK_Q=tiles.block_q, ROWS=rows, TILE_T=tile_t, PARTS=parts,
        PRECISION=dot_precision(q.dtype), num_warps=8 if rows >= 128 else 4)
    if parts > 1:
        _merge_kernel[(count * heads,)](part_acc, part_m, part_l, out, first * heads, D=dim,
                                        PARTS=parts)
    return out
