"""The NF4 product for one to four input rows on the tensor cores, in CUDA C (compiled by NVRTC).

The Triton GEMV (nf4_gemv.py) reads the weights at 0.7-1.3 TB/s on an H200: every weight costs
a lookup, two conversions to float32 and an FMA, and Triton's layouts add moves between them.
Here the multiply-adds go to the tensor cores, which are otherwise idle in a decode step:

- a warp owns 16 weight rows; lane (g, c) (g = lane / 4, c = lane % 4) loads 16 bytes of row g
  and 16 of row g + 8 at byte 16c of each 64-byte group (two quantization blocks of 64 weights):
  the 4 lanes of a row read its group's 64 contiguous bytes;
- each byte becomes its two code values as a bfloat16 pair in registers (`prmt` over the code
  table, as in nf4_asm.py), and is used directly as an A fragment register of
  `mma.m16n8k16`: the dot product does not care in which order k is visited, so byte 2j of lane
  (g, c) stands for the k pair c and byte 2j + 1 for the pair c + 4 of the j-th product. B holds
  the matching inputs, read from x at the same bytes' positions;
- B's eight columns separate the two quantization blocks of the group (and up to four input
  rows): column 2m + b carries input row m where the lane's bytes lie in block b, and zeros
  elsewhere, so each output element of the products is one block's unscaled sum, which is then
  scaled in float32 — the scales never touch the bfloat16 weights;
- the groups of a row are dealt out among the block's warps (GPW groups a warp), whose loads the
  compiler issues a group or two ahead of the products; the warps' float32 sums meet in shared
  memory;
- where a shape has few tiles of 16 rows for the GPU (O and down: 160 on an H200's 132
  multiprocessors), `split` blocks share each tile's groups (blockIdx.y): each leaves its sums in
  a float32 workspace and counts itself done (`tile_counts`); the last adds them up in block
  order, writes the outputs and sets the count back to 0 (`finish`, shared with nf4_tc_gemm.py).
  On the H200 that took down from 14.3 to 12.2 µs at one row (bench/results/nf4-split-k-h200.json).

The kernel is one basic block (a group past the row's end, or a column of no input row, is
weighted 0): with a branch per group the compiler moved each group's loads into it, next to their
use, one memory latency a group. Forcing every load before the first product (through a false
data dependency) was 15-25% slower on the H200 than the compiler's interleaving
(bench/results/nf4-tc-gemv-h200.json); on that card it reads the weights at 0.8-1.6 TB/s against
0.7-1.3 for the Triton GEMV.

bfloat16 inputs and outputs, 64-weight quantization blocks, K a multiple of 128 and N of 16; the
scales as float32 (fused linears) or double-quantized (8-bit codes, `code2`, `absmax2`, offset).
kernels/nf4_choice.py times it against the others at start-up and keeps it where it wins.
"""

from __future__ import annotations

import ctypes
import functools
from string import Template

import torch

from .nf4_asm import table_words
from .nvrtc import NVRTCError, compile_module

QBLOCK = 64
MAX_ROWS = 4  # input rows one launch takes: 2 blocks × 4 rows fill B's 8 columns

# Device functions both tensor-core kernels use (nf4_tc_gemm.py too).
HELPERS = Template(r"""
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

struct u32x2 { u32 x, y; };
struct u32x4 { u32 x, y, z, w; };

// Weights: read once, kept out of L1.
__device__ __forceinline__ u32x4 load_weights(const u8* p) {
  u32x4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// 8 bytes of weights (nf4_tc_gemm.py), likewise.
__device__ __forceinline__ u32x2 load_weights8(const u8* p) {
  u32x2 v;
  asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];"
               : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}

// COUNT inputs: read by every warp of the GPU, cached; zeros where `on` is 0.
template <int COUNT>
__device__ __forceinline__ void load_inputs(u32* v, const u32* p, int on) {
#pragma unroll
  for (int j = 0; j < COUNT; j += 4) {
    v[j] = v[j + 1] = v[j + 2] = v[j + 3] = 0u;
    asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %4, 0;\n"
                 " @p ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%5];\n}"
                 : "+r"(v[j]), "+r"(v[j + 1]), "+r"(v[j + 2]), "+r"(v[j + 3])
                 : "r"(on), "l"(p + j));
  }
}

__device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 s) {
  u32 d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(s));
  return d;
}

// The two bytes in the low 16 bits of src -> each byte's two code values as bfloat16 bits in one
// u32, in memory order (the high nibble's, the even column, in the lower half). lw/hw: the low
// and high bytes of the four nibbles' codes, looked up 8 entries at a time by prmt; m spreads
// each nibble's bit 3 over its byte (prmt's sign mode) to pick the half of the table.
__device__ __forceinline__ void pairs2(u32 src, u32& p0, u32& p1) {
  u32 s7 = src & 0x7777u;
  u32 m = prmt(src << 4, src, 0xD9C8u);
  u32 lw = (prmt($LOW0, $LOW1, s7) & ~m) | (prmt($LOW2, $LOW3, s7) & m);
  u32 hw = (prmt($HIGH0, $HIGH1, s7) & ~m) | (prmt($HIGH2, $HIGH3, s7) & m);
  p0 = prmt(lw, hw, 0x4051u);
  p1 = prmt(lw, hw, 0x6273u);
}

// 8 or 16 bytes -> their 16 or 32 code values as bfloat16 pairs, in memory order.
__device__ __forceinline__ void pairs8(u32 lo, u32 hi, u32* p) {
  pairs2(lo, p[0], p[1]); pairs2(lo >> 16, p[2], p[3]);
  pairs2(hi, p[4], p[5]); pairs2(hi >> 16, p[6], p[7]);
}

__device__ __forceinline__ void pairs16(const u32x4& w, u32* p) {
  pairs8(w.x, w.y, p);
  pairs8(w.z, w.w, p + 8);
}

__device__ __forceinline__ void mma(float* d, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The block's outputs (rows_in × 16: its warps' sums in `partial`) -> y. With K split over SPLIT
// blocks (blockIdx.y), each block leaves its sums in `work` and counts itself in done[tile]; the
// last of a tile's blocks adds them up in block order, writes y and sets the count back to 0.
template <int WARPS, int ROWS, int SPLIT>
__device__ __forceinline__ void finish(const float (*partial)[ROWS][16], u16* y, float* work,
                                       int* done, int rows_in, int n) {
  const int outputs = rows_in * 16;
  const long long tile = blockIdx.x;
  float* mine = work + ((long long)blockIdx.y * gridDim.x + tile) * outputs;
  // a trip count known at compile time (ROWS × 16 outputs at most): no unrolled runtime loop
#pragma unroll
  for (int j = 0; j < (ROWS * 16 + WARPS * 32 - 1) / (WARPS * 32); j++) {
    const int i = threadIdx.x + j * WARPS * 32;
    if (i >= outputs) break;
    float total = 0.f;
#pragma unroll
    for (int v = 0; v < WARPS; v++) total += partial[v][i >> 4][i & 15];
    if (SPLIT == 1) {
      u16 out;
      asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(out) : "f"(total));
      y[(long long)(i >> 4) * n + tile * 16 + (i & 15)] = out;
    } else {
      mine[i] = total;
    }
  }
  if (SPLIT == 1) return;
  __shared__ int last;
  __threadfence();  // the sums are visible to every block before the count says so
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(done + tile, 1) == SPLIT - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
#pragma unroll
  for (int j = 0; j < (ROWS * 16 + WARPS * 32 - 1) / (WARPS * 32); j++) {
    const int i = threadIdx.x + j * WARPS * 32;
    if (i >= outputs) break;
    float total = 0.f;
#pragma unroll
    for (int s = 0; s < SPLIT; s++) total += __ldcg(work + (s * gridDim.x + tile) * outputs + i);
    u16 out;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(out) : "f"(total));
    y[(long long)(i >> 4) * n + tile * 16 + (i & 15)] = out;
  }
  if (threadIdx.x == 0) done[tile] = 0;
}

__device__ __forceinline__ float block_scale(const void* absmax, const float* code2,
                                             const float* absmax2, float offset, long long i) {
#if $NESTED
  return code2[((const u8*)absmax)[i]] * absmax2[i / $BLOCKSIZE2] + offset;
#else
  return ((const float*)absmax)[i];
#endif
}
""")

_KERNEL = Template(r"""
#define K $K
#define WARPS $WARPS
#define SPLIT $SPLIT                           // blocks sharing a row's K (blockIdx.y)
#define GROUPS (K / 128)                       // 64-byte groups of a row
#define STRIDE (WARPS * SPLIT)                 // warps sharing a row's groups
#define GPW ((GROUPS + STRIDE - 1) / STRIDE)   // groups a warp takes

extern "C" __global__ void __launch_bounds__(WARPS * 32, 1)
nf4_tc_gemv(const u8* __restrict__ w, const u32* __restrict__ x, const void* absmax,
            const float* code2, const float* absmax2, float offset, u16* __restrict__ y,
            int rows_in, int n, float* work, int* done) {
  __shared__ float partial[WARPS][$MAX_ROWS][16];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int first = (SPLIT > 1 ? (int)blockIdx.y * WARPS : 0) + warp;  // its first group
  const int g = lane >> 2, c = lane & 3;
  const long long row_a = (long long)blockIdx.x * 16 + g, row_b = row_a + 8;
  const u8* wa = w + row_a * (K / 2) + 16 * c;
  const u8* wb = w + row_b * (K / 2) + 16 * c;

  // the weights of every group this warp takes (past the row's end: the last one again, weighted
  // 0); the compiler issues these loads a group or two ahead of their products
  u32x4 qa[GPW], qb[GPW];
#pragma unroll
  for (int i = 0; i < GPW; i++) {
    const int q = min(first + i * STRIDE, GROUPS - 1);
    qa[i] = load_weights(wa + 64 * q);
    qb[i] = load_weights(wb + 64 * q);
  }
  // B column g: input row g / 2 where this lane's bytes lie in block g % 2 (c / 2), else zeros
  const int x_row = g >> 1;
  const int feeds = x_row < rows_in && (g & 1) == (c >> 1);
  const u32* xs = x + (long long)min(x_row, rows_in - 1) * (K / 2) + 16 * c;
  const long long blocks = K / $QBLOCK;
  float acc_a = 0.f, acc_b = 0.f;
  u32 xv[2][16];  // this group's inputs and the next one's, loaded a group ahead
  load_inputs<16>(xv[0], xs + 64 * min(first, GROUPS - 1), feeds);

  // One basic block from here to the sums (no branch for the scheduler to sink loads into): a
  // group past the row's end, or a lane's column of no input row, is weighted 0.
#pragma unroll
  for (int i = 0; i < GPW; i++) {
    const int q = min(first + i * STRIDE, GROUPS - 1);
    if (i + 1 < GPW)  // known at compile time
      load_inputs<16>(xv[(i + 1) & 1], xs + 64 * min(first + (i + 1) * STRIDE, GROUPS - 1),
                      feeds);
    const float used = (first + i * STRIDE < GROUPS && c < rows_in) ? 1.f : 0.f;
    const long long ia = row_a * blocks + 2 * q, ib = row_b * blocks + 2 * q;
    const float sa0 = used * block_scale(absmax, code2, absmax2, offset, ia);
    const float sa1 = used * block_scale(absmax, code2, absmax2, offset, ia + 1);
    const float sb0 = used * block_scale(absmax, code2, absmax2, offset, ib);
    const float sb1 = used * block_scale(absmax, code2, absmax2, offset, ib + 1);
    const u32* xq = xv[i & 1];
    u32 pa[16], pb[16];
    pairs16(qa[i], pa);
    pairs16(qb[i], pb);
    float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int j = 0; j < 8; j++)
      mma(d, pa[2 * j], pb[2 * j], pa[2 * j + 1], pb[2 * j + 1], xq[2 * j], xq[2 * j + 1]);
    // d: rows g and g + 8, columns 2c (block 2q) and 2c + 1 (block 2q + 1) of input row c
    acc_a += d[0] * sa0 + d[1] * sa1;
    acc_b += d[2] * sb0 + d[3] * sb1;
  }

  if (c < rows_in) {
    partial[warp][c][g] = acc_a;
    partial[warp][c][g + 8] = acc_b;
  }
  __syncthreads();
  finish<WARPS, $MAX_ROWS, SPLIT>(partial, y, work, done, rows_in, n);
}
""")


def helpers(code: tuple[float, ...], nested: bool, blocksize2: int) -> str:
    """The device functions' CUDA C for one code table (as constants) and scale format."""
    low, high = table_words(code)
    return HELPERS.substitute(
        LOW0=low[0], LOW1=low[1], LOW2=low[2], LOW3=low[3],
        HIGH0=high[0], HIGH1=high[1], HIGH2=high[2], HIGH3=high[3],
        NESTED=int(nested), BLOCKSIZE2=max(1, blocksize2))


def source(code: tuple[float, ...], k: int, warps: int, nested: bool, blocksize2: int,
           split: int = 1) -> str:
    """The kernel's CUDA C for one shape, scale format and split of K over blocks."""
    return helpers(code, nested, blocksize2) + _KERNEL.substitute(
        K=k, WARPS=warps, SPLIT=split, QBLOCK=QBLOCK, MAX_ROWS=MAX_ROWS)


def fits(m: int, n: int, k: int, qblock: int, dtype: torch.dtype,
         max_rows: int = MAX_ROWS) -> bool:
    """Whether the kernel takes this product (nf4_tc_gemm's, with its own `max_rows`)."""
    return (1 <= m <= max_rows and qblock == QBLOCK and k % 128 == 0 and n % 16 == 0
            and dtype == torch.bfloat16)


@functools.lru_cache(maxsize=64)
def _kernel(code: tuple[float, ...], k: int, warps: int, nested: bool, blocksize2: int,
            split: int, device: torch.device):
    return compile_module(source(code, k, warps, nested, blocksize2, split), "nf4_tc_gemv",
                          device)


def gemv(linear, x: torch.Tensor, warps: int, split: int = 1) -> torch.Tensor:
    """y = x @ W.T for `linear` (an NF4Linear) and x (m ≤ MAX_ROWS, K) bfloat16 on a CUDA GPU;
    `warps` share each 16 rows' groups, in each of `split` blocks."""
    m, k = x.shape
    n = linear.out_features
    if not fits(m, n, k, linear.qblock, x.dtype):
        raise NVRTCError(f"the tensor-core GEMV does not take {m}x{k} @ {n}x{k} in {x.dtype}")
    if linear.packed.data_ptr() % 16:  # its loads take 16 bytes at a time
        raise NVRTCError("the tensor-core GEMV needs the packed weights 16-byte aligned")
    return launch(_kernel(linear.code_values, k, warps, linear.nested, linear.blocksize2, split,
                          x.device), linear, x, warps, split)


_counts: dict[torch.device, list[torch.Tensor]] = {}


def tile_counts(device: torch.device, tiles: int) -> torch.Tensor:
    """Zeroed int32 counts for `tiles` tiles of 16 rows, shared by every split launch on the
    device: launches on one stream never overlap, and each leaves its counts at 0. Made (or
    grown) on the first launch, before any CUDA graph captures one; earlier ones are kept, as
    captured graphs hold their address."""
    made = _counts.setdefault(device, [])
    if not made or made[-1].numel() < tiles:
        if torch.cuda.is_current_stream_capturing():
            raise NVRTCError("a split launch's first call cannot be in a CUDA graph's capture")
        made.append(torch.zeros(max(tiles, 4096), dtype=torch.int32, device=device))
    return made[-1]


def launch(kernel, linear, x: torch.Tensor, warps: int, split: int = 1) -> torch.Tensor:
    """Run a tensor-core kernel (this one's or nf4_tc_gemm's signature) on x: a block of `warps`
    warps per 16 weight rows and per 1/split of K."""
    m, n = x.shape[0], linear.out_features
    x = x.contiguous()
    if x.data_ptr() % 16:  # the inputs are read 16 bytes at a time
        x = x.clone()  # a fresh allocation is aligned
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    work, counts = y, y  # unused without a split
    if split > 1:
        work = torch.empty(split * m * n, dtype=torch.float32, device=x.device)
        counts = tile_counts(x.device, n // 16)
    kernel.launch((n // 16, split, 1), (warps * 32, 1, 1),
                  [linear.packed, x, linear.absmax, linear.code2, linear.absmax2,
                   ctypes.c_float(linear.offset), y, ctypes.c_int(m), ctypes.c_int(n), work,
                   counts])
    return y
