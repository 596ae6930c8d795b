"""The NF4 product for one input row (a decode step of one sequence): y = W @ x, BLOCK_N outputs
per program.

Each iteration reads GROUPS quantization blocks of every row as they lie in memory (BLOCK_N,
GROUPS, QBLOCK / 2 bytes), 4 bytes a thread and coalesced across the warp (capped at 4 so that
the weights share the int32 inputs' layout), and turns each byte into its two weights: with
bfloat16 inputs (X_PAIRS), `_pairs` (the two nibbles' code values, bfloat16 bits, in one int32;
two integer ops split them), and x is read as int32 too: the even and odd inputs that meet a
byte's two weights; with float32 or float16 inputs, the codes at full precision from the 16 in
`code_ptr` (the bfloat16 ones are off by up to 2⁻⁹). The products are scaled and summed
element-wise; nothing is reduced across threads until the end.

Two ways to feed it faster were measured on the H200 and dropped (bench/README.md): loading one
iteration ahead (8-15% slower: the bytes carried to the next iteration cost repacking for the
lookup; bench/results/nf4-gemv-prefetch-sweep-h200.json), and a form with fewer instructions
(a 32-bit word a thread dotted with its eight inputs in one piece of PTX: 254 a thread for 16
bytes against 281 under Triton 3.9), slower under Triton 3.6, whose layouts moved x through
shared memory between barriers 8 times an iteration.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .nf4_mma import _scales


@triton.jit
def _pairs(packed, pairs_ptr, ASM: tl.constexpr):
    """Each byte's two code values as bfloat16 bits in one int32 (the high nibble's, the even
    column, in the upper half): from registers through `ASM` (nf4_asm.pair_asm), else from the
    table in memory."""
    if ASM == "":
        return tl.load(pairs_ptr + packed.to(tl.int32))
    return tl.inline_asm_elementwise(ASM, "=r,=r,=r,=r,r", [packed], dtype=tl.int32,
                                     is_pure=True, pack=4)


@triton.jit
def _load_group(x_ptr, rows, absmax_ptr, code2_ptr, absmax2_ptr, offset, s_rows, b0, blocks, g,
                t, HALF: tl.constexpr, NESTED: tl.constexpr, BLOCKSIZE2: tl.constexpr,
                X_PAIRS: tl.constexpr):
    """What the iteration at block b0 reads: the packed bytes, x (as int32 pairs with X_PAIRS,
    else the even and odd inputs) and the blocks' scales; nothing past the row's blocks."""
    live = b0 + g < blocks
    byte = (b0 + g)[:, None] * HALF + t[None, :]  # (GROUPS, HALF) within the row
    packed = tl.load(rows + tl.max_contiguous(byte, [1, 4])[None, :, :],
                     mask=live[None, :, None], other=0)
    if X_PAIRS:
        x_a = tl.load(x_ptr + byte, mask=live[:, None], other=0)
        x_b = x_a
    else:
        x_a = tl.load(x_ptr + 2 * byte, mask=live[:, None], other=0.0).to(tl.float32)
        x_b = tl.load(x_ptr + 2 * byte + 1, mask=live[:, None], other=0.0).to(tl.float32)
    scale = _scales(absmax_ptr, code2_ptr, absmax2_ptr, offset, s_rows + (b0 + g)[None, :],
                    NESTED, BLOCKSIZE2, live[None, :])
    return packed, x_a, x_b, scale


@triton.jit
def _products(packed, x_a, x_b, scale, pairs_ptr, code_ptr, X_PAIRS: tl.constexpr,
              ASM: tl.constexpr):
    """The loaded group's scaled products, element-wise (BLOCK_N, GROUPS, HALF)."""
    if X_PAIRS:
        pair = _pairs(packed, pairs_ptr, ASM)
        hi = (pair & -65536).to(tl.float32, bitcast=True)
        lo = (pair << 16).to(tl.float32, bitcast=True)
        x_even = (x_a << 16).to(tl.float32, bitcast=True)
        x_odd = (x_b & -65536).to(tl.float32, bitcast=True)
    else:
        code = packed.to(tl.int32)
        hi = tl.load(code_ptr + (code >> 4))
        lo = tl.load(code_ptr + (code & 15))
        x_even, x_odd = x_a, x_b
    return (hi * x_even[None] + lo * x_odd[None]) * scale[:, :, None]


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, pairs_ptr, code_ptr, absmax_ptr, code2_ptr, absmax2_ptr, offset,
                 y_ptr, K, stride_w, BLOCK_N: tl.constexpr, GROUPS: tl.constexpr,
                 QBLOCK: tl.constexpr, NESTED: tl.constexpr, BLOCKSIZE2: tl.constexpr,
                 X_PAIRS: tl.constexpr, ASM: tl.constexpr):
    """y[rows] = W[rows] @ x (see the module's docstring)."""
    HALF: tl.constexpr = QBLOCK // 2
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    g = tl.arange(0, GROUPS)
    t = tl.arange(0, HALF)
    blocks = K // QBLOCK
    rows = w_ptr + rn.to(tl.int64)[:, None, None] * stride_w  # K // 2, passed for its alignment
    s_rows = rn.to(tl.int64)[:, None] * blocks
    acc = tl.zeros((BLOCK_N, GROUPS, HALF), dtype=tl.float32)
    for b0 in range(0, blocks, GROUPS):
        packed, x_a, x_b, scale = _load_group(
            x_ptr, rows, absmax_ptr, code2_ptr, absmax2_ptr, offset, s_rows, b0, blocks, g, t,
            HALF, NESTED, BLOCKSIZE2, X_PAIRS)
        acc += _products(packed, x_a, x_b, scale, pairs_ptr, code_ptr, X_PAIRS, ASM)
    y = tl.sum(tl.sum(acc, axis=2), axis=1)
    tl.store(y_ptr + rn, y.to(y_ptr.dtype.element_ty))
