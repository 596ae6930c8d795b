"""The NF4 product for a few to a hundred rows on the tensor cores, dequantizing in registers.

Above two rows the engine used to dequantize the whole weight to bfloat16 in memory and let cuBLAS
multiply (bitsandbytes' own algorithm there): 2 bytes a weight written and read back for half a
byte of NF4, so about 5 ms of a decode step's linears at any batch from 4 to 128 on the H200.
`_mma_kernel` reads the packed bytes once and never writes a weight:

- each program owns BLOCK_N weight rows and BLOCK_M input rows, and walks its share of the
  quantization blocks (all of them, or 1/SPLIT_K: the layers with few rows, O and down, have too
  few tiles of rows to keep the memory busy otherwise; the shares' float32 products are summed
  by `_sum_shares_kernel`, in a fixed order);
- a block's (BLOCK_N, QBLOCK / 2) bytes become the even columns' weights (high nibbles) and the
  odd columns' (low nibbles) as two tensors in registers (bfloat16: nf4_asm.split_asm, `prmt`
  over the code table, no memory access; float16 and float32, or where PTX cannot run: a gather
  from the 16 codes), so the block's product is two dots, even inputs by even weights and odd by
  odd, with no interleaving;
- the weights are the unscaled code values (in bfloat16 rounded as bitsandbytes' bfloat16
  weights are, to 8 bits); the block's scale multiplies the dots' float32 result, once per
  output instead of once per weight.

`_scales` (a block's scale, double quantization undone) serves nf4.py's kernels too.

bench/bench_nf4_matmul.py times its tilings against bitsandbytes and DEQUANTIZE per shape and row
count, and kernels/nf4_choice.py picks among them at start-up on the GPU it runs on.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _scales(absmax_ptr, code2_ptr, absmax2_ptr, offset, idx, NESTED: tl.constexpr,
            BLOCKSIZE2: tl.constexpr, mask=None):
    """The fp32 scale of the quantization blocks at `idx` (unspecified where `mask` is false:
    callers zero those products through their inputs)."""
    if mask is None:
        mask = idx >= 0  # every block
    if NESTED:
        q = tl.load(absmax_ptr + idx, mask=mask, other=0).to(tl.int32)
        scale = tl.load(code2_ptr + q) * tl.load(absmax2_ptr + idx // BLOCKSIZE2, mask=mask,
                                                 other=0.0) + offset
    else:
        scale = tl.load(absmax_ptr + idx, mask=mask, other=0.0)
    return scale


@triton.jit
def _even_odd(packed, code_ptr, ASM: tl.constexpr, dtype: tl.constexpr):
    """The code values of each byte's high nibble (the even column) and low nibble (the odd
    one), unscaled, in `dtype`: from registers through `ASM` (bfloat16 only), else from the 16
    float32 codes in memory (so float32 inputs meet the codes at full precision)."""
    if ASM == "":
        code = packed.to(tl.int32)
        even = tl.load(code_ptr + (code >> 4)).to(dtype)
        odd = tl.load(code_ptr + (code & 15)).to(dtype)
    else:
        even, odd = tl.inline_asm_elementwise(ASM, "=r,=r,=r,=r,r", [packed],
                                              dtype=(tl.bfloat16, tl.bfloat16), is_pure=True,
                                              pack=4)
    return even, odd


@triton.jit
def _mma_kernel(x_ptr, w_ptr, code_ptr, absmax_ptr, code2_ptr, absmax2_ptr, offset, y_ptr,
                M, K, stride_w, stride_xm, stride_ym, stride_share, split_k,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUPS: tl.constexpr,
                QBLOCK: tl.constexpr, NESTED: tl.constexpr, BLOCKSIZE2: tl.constexpr,
                ASM: tl.constexpr, PRECISION: tl.constexpr):
    """y[share, rm, rn] = x[rm] @ W[rn]ᵀ over this program's share of the quantization blocks
    (program ids: row tile of W, share, row tile of x; `stride_share` apart in `y`). GROUPS
    blocks per iteration, unrolled, so that more loads are in flight; the share is
    blocks / split_k, a multiple of GROUPS. The weights are the dots' first operand (the
    accumulator holds yᵀ), so the warps split the weight rows among them and each weight is
    looked up once; with x first, a tile of over 16 x rows looked every weight up on two warps
    or more and took twice the time (bench/results/nf4-mma-sweep-h200.json, x first, against
    nf4-mma-sweep2-h200.json)."""
    HALF: tl.constexpr = QBLOCK // 2
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
    t = tl.arange(0, HALF)
    blocks = K // QBLOCK
    share = blocks // split_k  # a multiple of GROUPS (the launcher checks)
    first = tl.program_id(1) * share
    w_rows = w_ptr + rn.to(tl.int64)[:, None] * stride_w  # K // 2, passed for its alignment
    x_cols = x_ptr + rm.to(tl.int64)[None, :] * stride_xm
    row_ok = rm[None, :] < M
    dtype = x_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)  # yᵀ
    s_rows = rn.to(tl.int64) * blocks
    for b0 in range(first, first + share, GROUPS):
        for g in tl.static_range(GROUPS):
            b = b0 + g
            packed = tl.load(w_rows + (b * HALF + t)[None, :])
            even, odd = _even_odd(packed, code_ptr, ASM, dtype)
            columns = (b * QBLOCK + 2 * t)[:, None]
            x_even = tl.load(x_cols + columns, mask=row_ok, other=0.0)
            x_odd = tl.load(x_cols + columns + 1, mask=row_ok, other=0.0)
            part = tl.dot(even, x_even, input_precision=PRECISION)
            part = tl.dot(odd, x_odd, part, input_precision=PRECISION)
            scale = _scales(absmax_ptr, code2_ptr, absmax2_ptr, offset, s_rows + b, NESTED,
                            BLOCKSIZE2)
            acc += part * scale[:, None]
    y_ptr += tl.program_id(1).to(tl.int64) * stride_share
    out = y_ptr + rm.to(tl.int64)[None, :] * stride_ym + rn[:, None]
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _sum_shares_kernel(parts_ptr, y_ptr, numel, SPLIT: tl.constexpr, BLOCK: tl.constexpr):
    """y = the sum of the SPLIT float32 partial products, always in the same order (atomic adds
    would make a result differ from run to run, and a CUDA graph's replay from the eager step)."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < numel
    parts = parts_ptr + i
    total = tl.load(parts, mask=ok, other=0.0)
    for _ in tl.static_range(1, SPLIT):
        parts += numel  # the next share's (pointer steps: no 32-bit product of share × numel)
        total += tl.load(parts, mask=ok, other=0.0)
    tl.store(y_ptr + i, total.to(y_ptr.dtype.element_ty), mask=ok)
