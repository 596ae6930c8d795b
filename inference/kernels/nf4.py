"""NF4 linears for the fast step: bitsandbytes' weights as loaded, fused where inputs are shared
(Q, K and V; gate and up), and the matrix product for each.

The weights stay as bitsandbytes stored them: the (N, K) weight flattened row by row, two 4-bit
codes a byte (the even element in the high nibble), one scale per `blocksize` elements. With double
quantization (the default checkpoint's) the scales are themselves 8-bit codes into `state2.code`,
scaled per 256 scales by `state2.absmax`, plus `offset`.

The engine multiplies through bitsandbytes (`NF4Linear.__call__`). Triton kernels that dequantize
in registers are here too (`NF4Linear.matmul`), measured against bitsandbytes on each of Qwen3-4B's
shapes by bench/bench_nf4_matmul.py; as written they lose everywhere on the H200 (the per-element
code-table gather and layout shuffles cap them far below memory bandwidth), so the engine's rule
is bitsandbytes at every shape and batch size until a faster kernel wins that table:
- `_gemv_kernel` for a few rows: each program computes BLOCK_N outputs for all M rows by broadcast
  multiply and sum, reading its weight tile once;
- `_gemm_kernel` for more rows: tiles of (BLOCK_M, BLOCK_N) on the tensor cores, the weight tile
  dequantized once per K step and shared by the BLOCK_M rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


@triton.jit
def _scales(absmax_ptr, code2_ptr, absmax2_ptr, offset, idx, NESTED: tl.constexpr,
            BLOCKSIZE2: tl.constexpr):
    """The fp32 scale of the quantization blocks at `idx`."""
    if NESTED:
        q = tl.load(absmax_ptr + idx).to(tl.int32)
        scale = tl.load(code2_ptr + q) * tl.load(absmax2_ptr + idx // BLOCKSIZE2) + offset
    else:
        scale = tl.load(absmax_ptr + idx)
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
def _gemv_kernel(x_ptr, w_ptr, absmax_ptr, code_ptr, code2_ptr, absmax2_ptr, offset, y_ptr,
                 M, N, K, stride_xm, stride_ym, M_PAD: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr, QBLOCK: tl.constexpr, NESTED: tl.constexpr,
                 BLOCKSIZE2: tl.constexpr):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.arange(0, M_PAD)
    acc = tl.zeros((M_PAD, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        w = _dequant_tile(w_ptr, absmax_ptr, code_ptr, code2_ptr, absmax2_ptr, offset, rn, k0, K,
                          BLOCK_N, BLOCK_K, QBLOCK, NESTED, BLOCKSIZE2)
        rk = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :], mask=rm[:, None] < M,
                    other=0.0).to(tl.float32)
        acc += tl.sum(x[:, None, :] * w[None, :, :], axis=2)
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=rm[:, None] < M)


@triton.jit
def _gemm_kernel(x_ptr, w_ptr, absmax_ptr, code_ptr, code2_ptr, absmax2_ptr, offset, y_ptr,
                 M, N, K, stride_xm, stride_ym, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr, QBLOCK: tl.constexpr, NESTED: tl.constexpr,
                 BLOCKSIZE2: tl.constexpr, PRECISION: tl.constexpr):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        w = _dequant_tile(w_ptr, absmax_ptr, code_ptr, code2_ptr, absmax2_ptr, offset, rn, k0, K,
                          BLOCK_N, BLOCK_K, QBLOCK, NESTED, BLOCKSIZE2)
        rk = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rm[:, None].to(tl.int64) * stride_xm + rk[None, :],
                    mask=rm[:, None] < M, other=0.0)
        acc += tl.dot(x, tl.trans(w.to(x.dtype)), input_precision=PRECISION)
    tl.store(y_ptr + rm[:, None].to(tl.int64) * stride_ym + rn[None, :],
             acc.to(y_ptr.dtype.element_ty), mask=rm[:, None] < M)


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


def default_config(m: int, n: int, k: int, qblock: int) -> Config | None:
    """Tiles for (M, K) @ (N, K)ᵀ; None where the shape does not tile. Narrow N tiles when the
    wide ones would leave multiprocessors without a program (a small batch is bandwidth-bound)."""
    if m <= GEMV_MAX_ROWS:
        block_k = _largest_dividing(k, (512, 256, 128, 64) if m == 1 else (256, 128, 64))
        block_n = next((b for b in (16, 8, 4, 2, 1) if n % b == 0 and n // b >= 2 * WAVE),
                       _largest_dividing(n, (4, 2, 1)))
        config = Config(block_n, block_k, 0, num_warps=4)
    else:
        block_m = 16 if m <= 16 else 32 if m <= 32 else 64
        rows = -(-m // block_m)
        block_n = next((b for b in (64, 32, 16) if n % b == 0 and rows * n // b >= WAVE),
                       _largest_dividing(n, (16, 32, 64)))
        config = Config(block_n, _largest_dividing(k, (128, 64)), block_m, num_warps=4,
                        num_stages=3)
    if not config.block_n or config.block_k < qblock or config.block_k % qblock:
        return None
    return config


class NF4Linear:
    """One bitsandbytes `Linear4bit` (NF4) run through the Triton kernels, using the module's own
    tensors (no copy of the weight), or several with the same input fused into one (`fused`)."""

    def __init__(self, module: torch.nn.Module):
        state = _nf4_state(module)
        self.out_features, self.in_features = (int(d) for d in state.shape)
        self.qblock = int(state.blocksize)
        self.packed = module.weight.data.view(torch.uint8).reshape(-1)
        self.code = state.code.float().contiguous()
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
        self.absmax = torch.cat([_expanded_absmax(s) for s in states])
        self.code2 = self.absmax2 = self.absmax  # unread
        self.nested, self.blocksize2, self.offset = False, 1, 0.0
        self.bias = None
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
        """x (M, K) in the compute dtype -> (M, N), through bitsandbytes' kernels: on the H200 they
        beat the Triton kernels below at every shape and batch size measured
        (bench/results/nf4-matmul-h200.json), so the engine uses them, captured in its graphs."""
        import bitsandbytes as bnb

        return bnb.matmul_4bit(x, self.packed, quant_state=self.state, bias=self.bias)

    def matmul(self, x: torch.Tensor, config: Config | None = None) -> torch.Tensor:
        """The same product through the Triton kernels (measured, not used by the engine)."""
        x = x.contiguous()
        m, n, k = x.shape[0], self.out_features, self.in_features
        config = config or default_config(m, n, k, self.qblock)
        if config is None:
            raise ValueError(f"no tiling for {m}x{k} @ {n}x{k}")
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
        common = dict(BLOCK_N=config.block_n, BLOCK_K=config.block_k, QBLOCK=self.qblock,
                      NESTED=self.nested, BLOCKSIZE2=self.blocksize2, num_warps=config.num_warps)
        if config.block_m == 0:
            _gemv_kernel[(n // config.block_n,)](x, *self._args(), y, m, n, k, x.stride(0),
                                                 y.stride(0), M_PAD=triton.next_power_of_2(m),
                                                 **common)
        else:
            grid = (n // config.block_n, triton.cdiv(m, config.block_m))
            _gemm_kernel[grid](x, *self._args(), y, m, n, k, x.stride(0), y.stride(0),
                               BLOCK_M=config.block_m, num_stages=config.num_stages,
                               PRECISION=dot_precision(x.dtype), **common)
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
