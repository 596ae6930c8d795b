"""NF4 linears for the fast step: bitsandbytes' weights as loaded, fused where inputs are shared
(Q, K and V; gate and up), and the matrix product for each.

The weights stay as bitsandbytes stored them: the (N, K) weight flattened row by row, two 4-bit
codes a byte (the even element in the high nibble), one scale per `blocksize` elements. With double
quantization (the default checkpoint's) the scales are themselves 8-bit codes into `state2.code`,
scaled per 256 scales by `state2.absmax`, plus `offset`.

`NF4Linear.__call__` multiplies through bitsandbytes, except for the row counts (decode batch
buckets) where the start-up measurement (kernels/nf4_choice.py) found a Triton kernel faster on
this GPU and recorded it in `triton`. The Triton kernels (`NF4Linear.matmul`), both reading each
byte's two weights with one gather from a 256-entry table (`pair_table`), are also measured
against bitsandbytes on each of Qwen3-4B's shapes by bench/bench_nf4_matmul.py:
- `_gemv_kernel` for one row: each program computes BLOCK_N outputs, reading its rows' packed
  bytes with coalesced loads and summing element-wise until the end (no cross-thread reduction in
  the loop); more rows run it per row;
- `_gemm_kernel` for more rows: tiles of (BLOCK_M, BLOCK_N) on the tensor cores, each
  quantization block as two dots (even inputs by high nibbles, odd by low), scaled after the dot,
  a few blocks per iteration.
The kernels as first written (a gather per nibble, nibbles interleaved by join/reshape) lost to
bitsandbytes at every size on the H200 (bench/results/nf4-matmul-h200.json); these have not yet
run on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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
def _dequant_tile(w_ptr, absmax_ptr, code_ptr, code2_ptr, absmax2_ptr, offset, rn, k0, K,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, QBLOCK: tl.constexpr,
                  NESTED: tl.constexpr, BLOCKSIZE2: tl.constexpr):
    """Rows `rn` (BLOCK_N,), columns k0..k0+BLOCK_K of the weight, as fp32 (BLOCK_N, BLOCK_K)."""
    half = tl.arange(0, BLOCK_K // 2)
    packed = tl.load(w_ptr + rn[:, None].to(tl.int64) * (K // 2) + (k0 // 2 + half)[None, :])
    hi = (packed >> 4).to(tl.int32)
    lo = (packed & 15).to(tl.int32)
    codes = tl.reshape(tl.join(hi, lo), (BLOCK_N, BLOCK_K))
    values = tl.load(code_ptr + codes)
    groups = tl.arange(0, BLOCK_K // QBLOCK)
    idx = rn[:, None].to(tl.int64) * (K // QBLOCK) + (k0 // QBLOCK + groups)[None, :]
    scale = _scales(absmax_ptr, code2_ptr, absmax2_ptr, offset, idx, NESTED, BLOCKSIZE2)
    values = tl.reshape(values, (BLOCK_N, BLOCK_K // QBLOCK, QBLOCK)) * scale[:, :, None]
    return tl.reshape(values, (BLOCK_N, BLOCK_K))


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, pairs_ptr, absmax_ptr, code2_ptr, absmax2_ptr, offset, y_ptr,
                 K, stride_w, BLOCK_N: tl.constexpr, GROUPS: tl.constexpr, QBLOCK: tl.constexpr,
                 NESTED: tl.constexpr, BLOCKSIZE2: tl.constexpr, X_PAIRS: tl.constexpr):
    """y[rows] = W[rows] @ x for one input row (a decode step of one sequence), BLOCK_N outputs
    per program.

    Each iteration reads GROUPS quantization blocks of every row as they lie in memory
    (BLOCK_N, GROUPS, QBLOCK / 2 bytes), 4 bytes a thread and coalesced across the warp (capped at
    4 so that the weights share the int32 inputs' layout: no shuffle between them), and turns each
    byte into its two weights with one gather from `pairs` (the two nibbles' code values, bfloat16
    bits, in one int32: two integer ops split them). With bfloat16 inputs (X_PAIRS), x is read as int32 too:
    the even and odd inputs that meet a byte's two weights. The products are scaled and summed
    element-wise; nothing is reduced across threads until the end."""
    HALF: tl.constexpr = QBLOCK // 2
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    g = tl.arange(0, GROUPS)
    t = tl.arange(0, HALF)
    blocks = K // QBLOCK
    rows = w_ptr + rn.to(tl.int64)[:, None, None] * stride_w  # K // 2, passed for its alignment
    acc = tl.zeros((BLOCK_N, GROUPS, HALF), dtype=tl.float32)
    for b0 in range(0, blocks, GROUPS):
        live = b0 + g < blocks
        byte = (b0 + g)[:, None] * HALF + t[None, :]  # (GROUPS, HALF) within the row
        packed = tl.load(rows + tl.max_contiguous(byte, [1, 4])[None, :, :],
                         mask=live[None, :, None], other=0)
        pair = tl.load(pairs_ptr + packed.to(tl.int32))
        hi = (pair & -65536).to(tl.float32, bitcast=True)
        lo = (pair << 16).to(tl.float32, bitcast=True)
        if X_PAIRS:
            both = tl.load(x_ptr + byte, mask=live[:, None], other=0)
            x_even = (both << 16).to(tl.float32, bitcast=True)
            x_odd = (both & -65536).to(tl.float32, bitcast=True)
        else:
            x_even = tl.load(x_ptr + 2 * byte, mask=live[:, None], other=0.0).to(tl.float32)
            x_odd = tl.load(x_ptr + 2 * byte + 1, mask=live[:, None], other=0.0).to(tl.float32)
        idx = rn.to(tl.int64)[:, None] * blocks + (b0 + g)[None, :]
        scale = _scales(absmax_ptr, code2_ptr, absmax2_ptr, offset, idx, NESTED, BLOCKSIZE2,
                        live[None, :])
        acc += (hi * x_even[None] + lo * x_odd[None]) * scale[:, :, None]
    y = tl.sum(tl.sum(acc, axis=2), axis=1)
    tl.store(y_ptr + rn, y.to(y_ptr.dtype.element_ty))


@triton.jit
def _gemm_block(x_rows, w_rows, pairs_ptr, absmax_ptr, code2_ptr, absmax2_ptr, offset, rn, row_ok,
                b, blocks, dtype, QBLOCK: tl.constexpr, NESTED: tl.constexpr,
                BLOCKSIZE2: tl.constexpr, X_PAIRS: tl.constexpr, PRECISION: tl.constexpr):
    """x @ W[rn]ᵀ over quantization block `b` alone, scaled (zero when b is past the last)."""
    HALF: tl.constexpr = QBLOCK // 2
    byte = b * HALF + tl.arange(0, HALF)
    live = (byte < blocks * HALF)[None, :]  # the whole block is past the last, or none of it
    packed = tl.load(w_rows + byte[None, :], mask=live, other=0)
    pair = tl.load(pairs_ptr + packed.to(tl.int32))
    w_even = (pair & -65536).to(tl.float32, bitcast=True).to(dtype)
    w_odd = (pair << 16).to(tl.float32, bitcast=True).to(dtype)
    x_ok = row_ok & live
    if X_PAIRS:
        both = tl.load(x_rows + byte[None, :], mask=x_ok, other=0)
        x_even = (both << 16).to(tl.float32, bitcast=True).to(dtype)
        x_odd = (both & -65536).to(tl.float32, bitcast=True).to(dtype)
    else:
        x_even = tl.load(x_rows + 2 * byte[None, :], mask=x_ok, other=0.0)
        x_odd = tl.load(x_rows + 2 * byte[None, :] + 1, mask=x_ok, other=0.0)
    part = tl.dot(x_even, tl.trans(w_even), input_precision=PRECISION)
    part = tl.dot(x_odd, tl.trans(w_odd), part, input_precision=PRECISION)
    idx = rn.to(tl.int64) * blocks + b
    scale = _scales(absmax_ptr, code2_ptr, absmax2_ptr, offset, idx, NESTED, BLOCKSIZE2,
                    rn * 0 + b < blocks)
    return part * scale[None, :]


@triton.jit
def _gemm_kernel(x_ptr, w_ptr, pairs_ptr, absmax_ptr, code2_ptr, absmax2_ptr, offset, y_ptr,
                 M, K, stride_w, stride_xm, stride_ym, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, GROUPS: tl.constexpr, QBLOCK: tl.constexpr,
                 NESTED: tl.constexpr, BLOCKSIZE2: tl.constexpr, X_PAIRS: tl.constexpr,
                 PRECISION: tl.constexpr):
    """y = x @ Wᵀ on the tensor cores, one (BLOCK_M, BLOCK_N) tile per program.

    Each quantization block of BLOCK_N rows is taken as it lies in memory (BLOCK_N, QBLOCK / 2
    bytes). The high nibbles are the weights of the even columns and the low nibbles those of the
    odd ones, so the block's product is two dots, even inputs by high-nibble weights plus odd
    inputs by low-nibble weights: no interleaving of the nibbles. The weights come from one `pairs`
    gather per byte as unscaled code values; the block's scale multiplies the dot's result, once
    per output rather than once per weight. An iteration takes GROUPS blocks (unrolled), so that a
    program has more bytes in flight where the layer has few rows (O, down)."""
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    blocks = K // QBLOCK
    w_rows = w_ptr + rn.to(tl.int64)[:, None] * stride_w  # K // 2, passed for its alignment
    x_rows = x_ptr + rm.to(tl.int64)[:, None] * stride_xm
    row_ok = rm[:, None] < M
    dtype = y_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for b0 in range(0, blocks, GROUPS):
        for g in tl.static_range(GROUPS):
            acc += _gemm_block(x_rows, w_rows, pairs_ptr, absmax_ptr, code2_ptr, absmax2_ptr,
                               offset, rn, row_ok, b0 + g, blocks, dtype, QBLOCK, NESTED,
                               BLOCKSIZE2, X_PAIRS, PRECISION)
    tl.store(y_ptr + rm.to(tl.int64)[:, None] * stride_ym + rn[None, :], acc.to(dtype),
             mask=row_ok)


@triton.jit
def _dequant_kernel(w_ptr, absmax_ptr, code_ptr, code2_ptr, absmax2_ptr, offset, out_ptr, K,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, QBLOCK: tl.constexpr,
                    NESTED: tl.constexpr, BLOCKSIZE2: tl.constexpr):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    k0 = tl.program_id(1) * BLOCK_K
    w = _dequant_tile(w_ptr, absmax_ptr, code_ptr, code2_ptr, absmax2_ptr, offset, rn, k0, K,
                      BLOCK_N, BLOCK_K, QBLOCK, NESTED, BLOCKSIZE2)
    rk = k0 + tl.arange(0, BLOCK_K)
    tl.store(out_ptr + rn[:, None].to(tl.int64) * K + rk[None, :], w.to(out_ptr.dtype.element_ty))


def dot_precision(dtype: torch.dtype) -> str:
    """float32 inputs are multiplied in full precision (not TF32): the CPU path's numbers."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _nf4_state(module: torch.nn.Module):
    state = getattr(module.weight, "quant_state", None)
    if state is None or state.quant_type != "nf4":
        raise ValueError("only bitsandbytes NF4 weights are supported")
    return state


def _expanded_absmax(state) -> torch.Tensor:
    """fp32 scales of every block, double quantization undone as bitsandbytes does it."""
    if not state.nested:
        return state.absmax.float()
    s2 = state.state2
    codes = s2.code.float()[state.absmax.long()]
    scales = s2.absmax.float().repeat_interleave(s2.blocksize)[:codes.numel()]
    return codes * scales + float(state.offset)


@dataclass(frozen=True)
class Config:
    """Tile sizes of one kernel launch."""

    block_n: int
    block_k: int
    block_m: int = 0  # 0: the GEMV kernel
    num_warps: int = 4
    num_stages: int = 2


GEMV_MAX_ROWS = 2  # above this, the tensor-core kernel
WAVE = 132  # programs that keep an H100/H200 busy; fewer leave multiprocessors idle


def _largest_dividing(k: int, options: tuple[int, ...]) -> int:
    return next((b for b in options if k % b == 0), 0)


def gemv_config(n: int, k: int, qblock: int) -> Config | None:
    """Tiles of the GEMV kernel: enough rows per program for 16-byte loads, and, where the layer
    has few rows (O, down), more of each row per iteration, so that enough bytes are in flight to
    keep memory busy. block_k counts weight columns (GROUPS * qblock); the last may overhang."""
    block_n, groups = (4, 8) if n >= 8192 else (2, 16)
    if n % block_n or k % qblock:
        return None
    return Config(block_n, groups * qblock, 0, num_warps=2, num_stages=2)


def default_config(m: int, n: int, k: int, qblock: int) -> Config | None:
    """Tiles for (M, K) @ (N, K)ᵀ; None where the shape does not tile. Narrow N tiles when the
    wide ones would leave multiprocessors without a program (a small batch is bandwidth-bound)."""
    if m <= GEMV_MAX_ROWS:
        return gemv_config(n, k, qblock)
    block_m = 16 if m <= 16 else 32 if m <= 32 else 64
    rows = -(-m // block_m)
    block_n = next((b for b in (64, 32, 16) if n % b == 0 and rows * n // b >= WAVE),
                   _largest_dividing(n, (16, 32, 64)))
    if not block_n or k % qblock:
        return None
    return Config(block_n, 2 * qblock, block_m, num_warps=4, num_stages=3)  # 2 blocks a step


def pair_table(code: torch.Tensor) -> torch.Tensor:
    """For each byte value, the code values of its two nibbles as bfloat16 bits in one int32: the
    high nibble's (the even column) in the upper half, the low nibble's in the lower half."""
    bits = code.to(torch.bfloat16).view(torch.int16).to(torch.int64) & 0xFFFF
    byte = torch.arange(256, device=code.device)
    pairs = (bits[byte >> 4] << 16) | bits[byte & 15]
    return torch.where(pairs >= 2**31, pairs - 2**32, pairs).to(torch.int32)


class NF4Linear:
    """One bitsandbytes `Linear4bit` (NF4) run through the Triton kernels, using the module's own
    tensors (no copy of the weight), or several with the same input fused into one (`fused`)."""

    def __init__(self, module: torch.nn.Module):
        state = _nf4_state(module)
        self.out_features, self.in_features = (int(d) for d in state.shape)
        self.qblock = int(state.blocksize)
        self.packed = module.weight.data.view(torch.uint8).reshape(-1)
        self.code = state.code.float().contiguous()
        self.pairs = pair_table(state.code)
        self.nested = bool(state.nested)
        if self.nested:
            self.absmax = state.absmax.contiguous()  # uint8 codes
            self.code2 = state.state2.code.float().contiguous()
            self.absmax2 = state.state2.absmax.float().contiguous()
            self.blocksize2 = int(state.state2.blocksize)
            self.offset = float(state.offset)
        else:
            self.absmax = state.absmax.float().contiguous()
            self.code2 = self.absmax2 = self.absmax  # unread
            self.blocksize2, self.offset = 1, 0.0
        self.bias = module.bias
        self.state = state  # what bitsandbytes' kernels read
        self.extra_bytes = 0  # memory held beyond the module's own tensors
        # Row bucket -> the Triton tiling that beat bitsandbytes there (None: it did not), in
        # increasing order of rows; empty: bitsandbytes everywhere (kernels/nf4_choice.py).
        self.triton: dict[int, Config | None] = {}
        self._check()

    @classmethod
    def fused(cls, modules: list[torch.nn.Module]) -> NF4Linear:
        """One linear whose outputs are the modules' outputs side by side (QKV, gate and up).

        The packed codes are concatenated into one buffer and each module's weight becomes a view
        of its rows, so memory does not grow by the weights; the scales, whose second-level
        constants differ per module, are stored expanded to fp32 (4 bytes per block of 64)."""
        states = [_nf4_state(m) for m in modules]
        if len({int(s.shape[1]) for s in states}) != 1 or len({s.blocksize for s in states}) != 1:
            raise ValueError("fused linears need the same input size and block size")
        if any(m.bias is not None for m in modules):
            raise ValueError("fused linears with a bias are not supported")
        self = cls.__new__(cls)
        self.out_features = sum(int(s.shape[0]) for s in states)
        self.in_features = int(states[0].shape[1])
        self.qblock = int(states[0].blocksize)
        self.packed = torch.cat([m.weight.data.view(torch.uint8).reshape(-1) for m in modules])
        start = 0
        for m in modules:
            size = m.weight.data.numel()
            m.weight.data = self.packed[start:start + size].view(m.weight.data.shape)
            start += size
        self.code = states[0].code.float().contiguous()
        self.pairs = pair_table(states[0].code)
        self.absmax = torch.cat([_expanded_absmax(s) for s in states])
        self.code2 = self.absmax2 = self.absmax  # unread
        self.nested, self.blocksize2, self.offset = False, 1, 0.0
        self.bias = None
        self.triton = {}
        from bitsandbytes.functional import QuantState

        self.state = QuantState(self.absmax, shape=torch.Size([self.out_features, self.in_features]),
                                code=states[0].code, blocksize=self.qblock, quant_type="nf4",
                                dtype=states[0].dtype)
        self.extra_bytes = self.absmax.numel() * self.absmax.element_size()
        self._check()
        return self

    def _check(self) -> None:
        if self.in_features % self.qblock or self.packed.numel() * 2 != (
                self.out_features * self.in_features):
            raise ValueError("weight shape does not match its quantization blocks")

    def _args(self):
        return (self.packed, self.absmax, self.code, self.code2, self.absmax2, self.offset)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, K) in the compute dtype -> (M, N): the Triton kernel measured faster for M's row
        bucket, bitsandbytes' kernels otherwise (captured in the graphs either way)."""
        config = self.triton_config(x.shape[0]) if self.bias is None else None
        if config is not None:
            return self.matmul(x, config)
        return self.bitsandbytes(x)

    def triton_config(self, rows: int) -> Config | None:
        """The Triton tiling for `rows` rows: that of the smallest measured bucket that holds them;
        None for bitsandbytes (also above the largest bucket)."""
        for bucket, config in self.triton.items():
            if rows <= bucket:
                return config
        return None

    def bitsandbytes(self, x: torch.Tensor) -> torch.Tensor:
        """The product through bitsandbytes: its GEMV for one row, dequantize + matmul above."""
        import bitsandbytes as bnb

        return bnb.matmul_4bit(x, self.packed, quant_state=self.state, bias=self.bias)

    def matmul(self, x: torch.Tensor, config: Config | None = None) -> torch.Tensor:
        """The same product through the Triton kernels."""
        x = x.contiguous()
        m, n, k = x.shape[0], self.out_features, self.in_features
        config = config or default_config(m, n, k, self.qblock)
        if config is None:
            raise ValueError(f"no tiling for {m}x{k} @ {n}x{k}")
        if n % config.block_n or config.block_k % self.qblock:
            raise ValueError(f"{config} does not tile {n}x{k}")
        groups = config.block_k // self.qblock
        if groups < 1 or config.block_m == 0 and groups & (groups - 1):
            raise ValueError(f"{config}: the GEMV reads a power of two of blocks per iteration")
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
        if config.block_m == 0:
            pairs = x.dtype == torch.bfloat16  # two inputs as one int32
            for row in range(m):
                xs = x[row].view(torch.int32) if pairs else x[row]
                _gemv_kernel[(n // config.block_n,)](
                    xs, self.packed, self.pairs, self.absmax, self.code2, self.absmax2,
                    self.offset, y[row], k, k // 2, BLOCK_N=config.block_n,
                    GROUPS=config.block_k // self.qblock, QBLOCK=self.qblock, NESTED=self.nested,
                    BLOCKSIZE2=self.blocksize2, X_PAIRS=pairs, num_warps=config.num_warps,
                    num_stages=config.num_stages)
        else:
            pairs = x.dtype == torch.bfloat16  # two inputs as one int32
            xs = x.view(torch.int32) if pairs else x
            grid = (n // config.block_n, triton.cdiv(m, config.block_m))
            _gemm_kernel[grid](xs, self.packed, self.pairs, self.absmax, self.code2, self.absmax2,
                               self.offset, y, m, k, k // 2, xs.stride(0), y.stride(0),
                               BLOCK_M=config.block_m, BLOCK_N=config.block_n,
                               GROUPS=config.block_k // self.qblock, QBLOCK=self.qblock,
                               NESTED=self.nested, BLOCKSIZE2=self.blocksize2, X_PAIRS=pairs,
                               PRECISION=dot_precision(x.dtype), num_warps=config.num_warps,
                               num_stages=config.num_stages)
        return y

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """The whole weight (N, K) in `dtype`."""
        n, k = self.out_features, self.in_features
        out = torch.empty((n, k), dtype=dtype, device=self.packed.device)
        block_k = _largest_dividing(k, (256, 128, 64))
        block_n = _largest_dividing(n, (16, 8, 4, 2, 1))
        _dequant_kernel[(n // block_n, k // block_k)](
            self.packed, *self._args()[1:], out, k, BLOCK_N=block_n, BLOCK_K=block_k,
            QBLOCK=self.qblock, NESTED=self.nested, BLOCKSIZE2=self.blocksize2)
        return out
