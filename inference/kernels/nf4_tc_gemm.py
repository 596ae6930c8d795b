"""The NF4 product for up to sixteen input rows on the tensor cores, in CUDA C (compiled by NVRTC).

nf4_tc_gemv.py packs four input rows and two quantization blocks into the eight columns of
`mma.m16n8k16`'s B; a prompt chunk of 15 tokens (a follower of a shared system prompt) or a
decode step of 5 to 16 streams needs more rows than that. Here each product stays inside one
quantization block instead, so B's columns are plain input rows, eight to a tile:

- a warp owns 16 weight rows; lane (g, c) (g = lane / 4, c = lane % 4) loads 8 bytes of row g
  and 8 of row g + 8 at byte 8c of each 32-byte block: the 4 lanes of a row read the block's 32
  contiguous bytes, its 64 weights, and every product's k lies in one block;
- the bytes become bfloat16 code pairs in registers (nf4_tc_gemv's `pairs2`), used directly as
  A fragments: byte 2j of lane (g, c) stands for the k pair c and byte 2j + 1 for the pair
  c + 4 of the j-th product (4 products a block);
- B of tile t: column g is input row 8t + g (zeros past the last row), read from x at the same
  weights' positions; each tile's 4 products sum one block unscaled, then that block's scales
  (rows g and g + 8) weight it into float32 accumulators;
- the groups of a row (two blocks, 64 bytes) are dealt out among the block's warps, as in
  nf4_tc_gemv.py, and the kernel is one basic block for the same reason; the warps' sums meet in
  shared memory, and K may be split over blocks as there.

Each 16 weight rows read the inputs once per tile: at sixteen rows, four bytes of (cached)
inputs per byte of weights. bfloat16 inputs and outputs, 64-weight quantization blocks, K a
multiple of 128 and N of 16; both scale formats. kernels/nf4_choice.py times it against the
others at start-up and keeps it where it wins.
"""

from __future__ import annotations

import functools
from string import Template

import torch

from .nf4_tc_gemv import QBLOCK, helpers, launch
from .nf4_tc_gemv import fits as _fits
from .nvrtc import NVRTCError, compile_module

MAX_ROWS = 16  # two tiles of B's 8 columns

_KERNEL = Template(r"""
#define K $K
#define WARPS $WARPS
#define TILES $TILES                           // tiles of 8 input rows
#define SPLIT $SPLIT                           // blocks sharing a row's K (blockIdx.y)
#define GROUPS (K / 128)                       // 64-byte groups (two blocks) of a row
#define STRIDE (WARPS * SPLIT)                 // warps sharing a row's groups
#define GPW ((GROUPS + STRIDE - 1) / STRIDE)   // groups a warp takes

extern "C" __global__ void __launch_bounds__(WARPS * 32, 1)
nf4_tc_gemm(const u8* __restrict__ w, const u32* __restrict__ x, const void* absmax,
            const float* code2, const float* absmax2, float offset, u16* __restrict__ y,
            int rows_in, int n, float* work, int* done) {
  __shared__ float partial[WARPS][TILES * 8][16];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int first = (SPLIT > 1 ? (int)blockIdx.y * WARPS : 0) + warp;  // its first group
  const int g = lane >> 2, c = lane & 3;
  const long long row_a = (long long)blockIdx.x * 16 + g, row_b = row_a + 8;
  const u8* wa = w + row_a * (K / 2) + 8 * c;
  const u8* wb = w + row_b * (K / 2) + 8 * c;

  // the weights of every group this warp takes, both blocks (past the row's end: the last group
  // again, weighted 0)
  u32x2 qa[GPW][2], qb[GPW][2];
#pragma unroll
  for (int i = 0; i < GPW; i++) {
    const int q = min(first + i * STRIDE, GROUPS - 1);
#pragma unroll
    for (int h = 0; h < 2; h++) {
      qa[i][h] = load_weights8(wa + 64 * q + 32 * h);
      qb[i][h] = load_weights8(wb + 64 * q + 32 * h);
    }
  }
  // B column g of tile t: input row 8t + g (zeros past the last one)
  int feeds[TILES];
  const u32* xs[TILES];
#pragma unroll
  for (int t = 0; t < TILES; t++) {
    feeds[t] = 8 * t + g < rows_in;
    xs[t] = x + (long long)min(8 * t + g, rows_in - 1) * (K / 2) + 8 * c;
  }
  const long long blocks = K / $QBLOCK;
  float acc[TILES][4];
#pragma unroll
  for (int t = 0; t < TILES; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.f;
  // a group's inputs (tile t: block 0's 8 words, then block 1's), and the next group's
  u32 xv[2][TILES][16];
  {
    const int q = min(first, GROUPS - 1);
#pragma unroll
    for (int t = 0; t < TILES; t++) {
      load_inputs<8>(xv[0][t], xs[t] + 64 * q, feeds[t]);
      load_inputs<8>(xv[0][t] + 8, xs[t] + 64 * q + 32, feeds[t]);
    }
  }

#pragma unroll
  for (int i = 0; i < GPW; i++) {
    const int q = min(first + i * STRIDE, GROUPS - 1);
    if (i + 1 < GPW) {  // known at compile time
      const int next = min(first + (i + 1) * STRIDE, GROUPS - 1);
#pragma unroll
      for (int t = 0; t < TILES; t++) {
        load_inputs<8>(xv[(i + 1) & 1][t], xs[t] + 64 * next, feeds[t]);
        load_inputs<8>(xv[(i + 1) & 1][t] + 8, xs[t] + 64 * next + 32, feeds[t]);
      }
    }
    const float used = first + i * STRIDE < GROUPS ? 1.f : 0.f;
    const long long ia = row_a * blocks + 2 * q, ib = row_b * blocks + 2 * q;
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const float sa = used * block_scale(absmax, code2, absmax2, offset, ia + h);
      const float sb = used * block_scale(absmax, code2, absmax2, offset, ib + h);
      u32 pa[8], pb[8];
      pairs8(qa[i][h].x, qa[i][h].y, pa);
      pairs8(qb[i][h].x, qb[i][h].y, pb);
#pragma unroll
      for (int t = 0; t < TILES; t++) {
        const u32* xq = xv[i & 1][t] + 8 * h;
        float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int j = 0; j < 4; j++)
          mma(d, pa[2 * j], pb[2 * j], pa[2 * j + 1], pb[2 * j + 1], xq[2 * j], xq[2 * j + 1]);
        // d: rows g and g + 8, columns 2c and 2c + 1 (input rows 8t + 2c, 8t + 2c + 1)
        acc[t][0] += d[0] * sa;
        acc[t][1] += d[1] * sa;
        acc[t][2] += d[2] * sb;
        acc[t][3] += d[3] * sb;
      }
    }
  }

#pragma unroll
  for (int t = 0; t < TILES; t++) {
    const int col = 8 * t + 2 * c;
    partial[warp][col][g] = acc[t][0];
    partial[warp][col + 1][g] = acc[t][1];
    partial[warp][col][g + 8] = acc[t][2];
    partial[warp][col + 1][g + 8] = acc[t][3];
  }
  __syncthreads();
  finish<WARPS, TILES * 8, SPLIT>(partial, y, work, done, rows_in, n);
}
""")


def tiles(m: int) -> int:
    """Tiles of 8 input rows a launch for `m` rows takes."""
    return (m + 7) // 8


def source(code: tuple[float, ...], k: int, warps: int, n_tiles: int, nested: bool,
           blocksize2: int, split: int = 1) -> str:
    """The kernel's CUDA C for one shape, tile count, scale format and split of K over blocks."""
    return helpers(code, nested, blocksize2) + _KERNEL.substitute(
        K=k, WARPS=warps, TILES=n_tiles, SPLIT=split, QBLOCK=QBLOCK)


def fits(m: int, n: int, k: int, qblock: int, dtype: torch.dtype) -> bool:
    """Whether the kernel takes this product: the GEMV's shapes, up to MAX_ROWS rows."""
    return _fits(m, n, k, qblock, dtype, MAX_ROWS)


@functools.lru_cache(maxsize=64)
def _kernel(code: tuple[float, ...], k: int, warps: int, n_tiles: int, nested: bool,
            blocksize2: int, split: int, device: torch.device):
    return compile_module(source(code, k, warps, n_tiles, nested, blocksize2, split),
                          "nf4_tc_gemm", device)


def gemm(linear, x: torch.Tensor, warps: int, split: int = 1) -> torch.Tensor:
    """y = x @ W.T for `linear` (an NF4Linear) and x (m ≤ MAX_ROWS, K) bfloat16 on a CUDA GPU;
    `warps` share each 16 rows' groups, in each of `split` blocks."""
    m, k = x.shape
    n = linear.out_features
    if not fits(m, n, k, linear.qblock, x.dtype):
        raise NVRTCError(f"the tensor-core GEMM does not take {m}x{k} @ {n}x{k} in {x.dtype}")
    if linear.packed.data_ptr() % 8:  # its loads take 8 bytes at a time
        raise NVRTCError("the tensor-core GEMM needs the packed weights 8-byte aligned")
    return launch(_kernel(linear.code_values, k, warps, tiles(m), linear.nested,
                          linear.blocksize2, split, x.device), linear, x, warps, split)
