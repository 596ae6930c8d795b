"""NF4 linears for the fast step: bitsandbytes' weights as loaded, fused where inputs are shared
(Q, K and V; gate and up), and the matrix product for each.

The weights stay as bitsandbytes stored them: the (N, K) weight flattened row by row, two 4-bit
codes a byte (the even element in the high nibble), one scale per `blocksize` elements. With double
quantization (the default checkpoint's) the scales are themselves 8-bit codes into `state2.code`,
scaled per 256 scales by `state2.absmax`, plus `offset`.

`NF4Linear.__call__` multiplies through bitsandbytes, except for the row counts (decode batch
buckets, and prompt chunks above the largest where DEQUANTIZE beat bitsandbytes) where the
start-up measurement (kernels/nf4_choice.py) found one of ours faster on this GPU and recorded it
in `triton` (and `above`):
- the CUDA C tensor-core GEMV (kernels/nf4_tc_gemv.py, compiled by NVRTC) for one to four rows:
  the looked-up weights go straight into `mma` fragments, the inputs split by quantization block
  over B's columns; and its sibling for up to sixteen rows (kernels/nf4_tc_gemm.py), each
  product inside one quantization block and B's columns plain input rows;
- `_gemv_kernel` (kernels/nf4_gemv.py) for one row (two rows run it twice): each program
  computes BLOCK_N outputs, reading its rows' packed bytes with coalesced loads and summing
  element-wise until the end (no cross-thread reduction in the loop);
- the tensor-core kernel (kernels/nf4_mma.py) for a few to tens of rows: the weights looked up
  in registers as the dots' operands, never written out;
- `DEQUANTIZE` for many rows: `_dequant_kernel` writes the bfloat16 weight and cuBLAS multiplies,
  which is what bitsandbytes does above one row, with a faster dequantization.
All turn each byte into its two weights in registers (kernels/nf4_asm.py: `prmt` byte permutes
over the code table held in registers) where PTX can run, and by a gather from a 256-entry table
(`pair_table`) elsewhere (Triton's interpreter). bench/nf4_lookup.py measured the lookups;
bench/bench_nf4_matmul.py measures these against bitsandbytes per shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import nf4_tc_gemm, nf4_tc_gemv
from .nf4_asm import lookup_asm
from .nf4_gemv import _gemv_kernel
from .nf4_mma import _mma_kernel, _scales, _sum_shares_kernel
from .paged_attention import dot_precision


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
def _dequant_kernel(w_ptr, absmax_ptr, code_ptr, code2_ptr, absmax2_ptr, offset, out_ptr, K,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, QBLOCK: tl.constexpr,
                    NESTED: tl.constexpr, BLOCKSIZE2: tl.constexpr, ASM: tl.constexpr):
    """out[rows, k0:k0 + BLOCK_K] = the weight, one (BLOCK_N, BLOCK_K) tile per program. With
    `ASM` (nf4_asm.dequant_asm, bfloat16 output) each byte becomes its two scaled weights in
    registers and is stored as one int32 (`out_ptr` is the bfloat16 weight viewed as int32)."""
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    k0 = tl.program_id(1) * BLOCK_K
    if ASM == "":
        w = _dequant_tile(w_ptr, absmax_ptr, code_ptr, code2_ptr, absmax2_ptr, offset, rn, k0, K,
                          BLOCK_N, BLOCK_K, QBLOCK, NESTED, BLOCKSIZE2)
        rk = k0 + tl.arange(0, BLOCK_K)
        tl.store(out_ptr + rn[:, None].to(tl.int64) * K + rk[None, :],
                 w.to(out_ptr.dtype.element_ty))
    else:
        HALF: tl.constexpr = QBLOCK // 2
        GROUPS: tl.constexpr = BLOCK_K // QBLOCK
        byte = (k0 // 2 + tl.arange(0, GROUPS * HALF))
        rows = rn[:, None].to(tl.int64) * (K // 2)
        packed = tl.load(w_ptr + rows + byte[None, :])
        blocks = k0 // QBLOCK + tl.arange(0, GROUPS)
        idx = rn[:, None].to(tl.int64) * (K // QBLOCK) + blocks[None, :]
        scale = _scales(absmax_ptr, code2_ptr, absmax2_ptr, offset, idx, NESTED, BLOCKSIZE2)
        scale = tl.reshape(tl.broadcast_to(scale[:, :, None], (BLOCK_N, GROUPS, HALF)),
                           (BLOCK_N, GROUPS * HALF))
        pairs = tl.inline_asm_elementwise(ASM, "=r,=r,=r,=r,r,r,r,r,r", [packed, scale],
                                          dtype=tl.int32, is_pure=True, pack=4)
        tl.store(out_ptr + rows + byte[None, :], pairs)


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
    """One way to run the product: the GEMV's tiles (block_m 0), DEQUANTIZE (block_m -1), the
    CUDA C tensor-core kernels (`num_warps` a block: block_m -2 up to four rows,
    kernels/nf4_tc_gemv.py; -3 up to sixteen, kernels/nf4_tc_gemm.py), or the tensor-core
    kernel's (block_m > 0; kernels/nf4_mma.py), whose programs each take 1/split_k of the
    quantization blocks. block_k: weight columns per iteration."""

    block_n: int
    block_k: int
    block_m: int = 0
    num_warps: int = 4
    num_stages: int = 2
    split_k: int = 1

    @property
    def dequantizes(self) -> bool:
        return self.block_m == -1

    @property
    def tensor_cores(self) -> bool:
        return self.block_m > 0

    @property
    def compiled(self) -> bool:
        """One of the CUDA C kernels."""
        return self.block_m in (-2, -3)


DEQUANTIZE = Config(0, 0, -1)  # the bfloat16 weight from _dequant_kernel, then cuBLAS
GEMV_MAX_ROWS = 2  # above this, the tensor-core kernel or DEQUANTIZE


def tc_gemv_config(num_warps: int, split: int = 1) -> Config:
    """The CUDA C tensor-core GEMV (up to four rows) with `num_warps` warps a block, each row's K
    split over `split` blocks."""
    return Config(16, 0, -2, num_warps=num_warps, split_k=split)


def tc_gemm_config(num_warps: int, split: int = 1) -> Config:
    """The CUDA C tensor-core kernel for up to sixteen rows, likewise."""
    return Config(16, 0, -3, num_warps=num_warps, split_k=split)


def _packs(tile_bytes: int, num_warps: int) -> bool:
    """Whether a tile of `tile_bytes` gives each thread a multiple of four bytes, as the PTX
    lookup (four bytes a call) needs: Triton aborts the process on a tile that does not."""
    per_thread, rest = divmod(tile_bytes, 32 * num_warps)
    return not rest and per_thread % 4 == 0


def mma_tiles(config: Config, n: int, k: int, qblock: int) -> bool:
    """Whether the tensor-core kernel's tiles fit the shape: whole tiles of rows, and each
    program's share of the quantization blocks a whole number of iterations."""
    def dot_size(d: int) -> bool:  # what tl.arange and tl.dot take
        return d >= 16 and not d & (d - 1)

    groups, rest = divmod(config.block_k, qblock)
    return (config.tensor_cores and dot_size(config.block_m) and dot_size(config.block_n)
            and dot_size(qblock // 2) and not n % config.block_n and not rest and groups >= 1
            and config.split_k >= 1 and not k % qblock
            and (k // qblock) % (config.split_k * groups) == 0)


def _largest_dividing(k: int, options: tuple[int, ...]) -> int:
    return next((b for b in options if k % b == 0), 0)


def gemv_config(n: int, k: int, qblock: int) -> Config | None:
    """Tiles of the GEMV kernel: four rows per program, and, where the layer has few rows (O,
    down), more of each row per iteration, so that enough bytes are in flight to keep memory busy.
    block_k counts weight columns (GROUPS * qblock); the last may overhang. The best tilings on
    the H200 (bench/results/nf4-lookup-h200.json)."""
    block_n, groups, warps = (4, 8, 2) if n >= 4096 else (4, 16, 4)
    if n % block_n or k % qblock:
        return None
    return Config(block_n, groups * qblock, 0, num_warps=warps, num_stages=2)


def default_config(m: int, n: int, k: int, qblock: int) -> Config | None:
    """The GEMV for one or two rows, DEQUANTIZE above; None where the shape does not tile."""
    if m <= GEMV_MAX_ROWS:
        return gemv_config(n, k, qblock)
    return DEQUANTIZE if k % qblock == 0 else None


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
        self.code_values = tuple(float(v) for v in self.code.cpu())  # read once, not per call
        self.pairs = pair_table(state.code)
        self.asm = lookup_asm(state.code, "pair")
        self.dequant_asm = lookup_asm(state.code, "dequant")
        self.split_asm = lookup_asm(state.code, "split")
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
        self.above: Config | None = None  # rows above the largest bucket: DEQUANTIZE or None
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
        self.code_values = tuple(float(v) for v in self.code.cpu())
        self.pairs = pair_table(states[0].code)
        self.asm = lookup_asm(states[0].code, "pair")
        self.dequant_asm = lookup_asm(states[0].code, "dequant")
        self.split_asm = lookup_asm(states[0].code, "split")
        self.absmax = torch.cat([_expanded_absmax(s) for s in states])
        self.code2 = self.absmax2 = self.absmax  # unread
        self.nested, self.blocksize2, self.offset = False, 1, 0.0
        self.bias = None
        self.triton = {}
        self.above = None
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
        """x (M, K) in the compute dtype -> (M, N): our product where the start-up measurement
        chose it for M (`triton_config`), bitsandbytes' kernels otherwise (captured in the graphs
        either way)."""
        config = self.triton_config(x.shape[0]) if self.bias is None else None
        if config is not None:
            return self.matmul(x, config)
        return self.bitsandbytes(x)

    def triton_config(self, rows: int) -> Config | None:
        """Our product for `rows` rows: that of the smallest measured bucket that holds them; None
        for bitsandbytes. Above the largest bucket (prompt chunks), `above`: DEQUANTIZE where it
        beat bitsandbytes at the largest bucket (the same algorithm as bitsandbytes' for many
        rows, with the faster dequantization)."""
        for bucket, config in self.triton.items():
            if rows <= bucket:
                return config
        return self.above

    def use_bitsandbytes(self) -> None:
        """Forget the measured choices: bitsandbytes' products for every row count."""
        self.triton, self.above = {}, None

    def bitsandbytes(self, x: torch.Tensor) -> torch.Tensor:
        """The product through bitsandbytes: its GEMV for one row, dequantize + matmul above."""
        import bitsandbytes as bnb

        return bnb.matmul_4bit(x, self.packed, quant_state=self.state, bias=self.bias)

    def matmul(self, x: torch.Tensor, config: Config | None = None) -> torch.Tensor:
        """The same product through our kernels (`config`, else `default_config`)."""
        x = x.contiguous()
        m, n, k = x.shape[0], self.out_features, self.in_features
        config = config or default_config(m, n, k, self.qblock)
        if config is None:
            raise ValueError(f"no tiling for {m}x{k} @ {n}x{k}")
        if config.dequantizes:
            return x @ self.dequantize(x.dtype).t()
        if config.block_m == -2:
            return nf4_tc_gemv.gemv(self, x, config.num_warps, config.split_k)
        if config.block_m == -3:
            return nf4_tc_gemm.gemm(self, x, config.num_warps, config.split_k)
        if config.tensor_cores:
            return self._mma(x, config)
        if n % config.block_n or config.block_k % self.qblock:
            raise ValueError(f"{config} does not tile {n}x{k}")
        groups = config.block_k // self.qblock
        if groups < 1 or groups & (groups - 1):
            raise ValueError(f"{config}: the GEMV reads a power of two of blocks per iteration")
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
        pairs = x.dtype == torch.bfloat16  # two inputs as one int32
        # the PTX takes four bytes a call: a tile with fewer than four a thread takes the table
        asm = self.asm if _packs(config.block_n * config.block_k // 2, config.num_warps) else ""
        for row in range(m):
            xs = x[row].view(torch.int32) if pairs else x[row]
            _gemv_kernel[(n // config.block_n,)](
                xs, self.packed, self.pairs, self.code, self.absmax, self.code2, self.absmax2,
                self.offset, y[row], k, k // 2, BLOCK_N=config.block_n, GROUPS=groups, QBLOCK=self.qblock,
                NESTED=self.nested, BLOCKSIZE2=self.blocksize2, X_PAIRS=pairs, ASM=asm,
                num_warps=config.num_warps, num_stages=config.num_stages)
        return y

    def _mma(self, x: torch.Tensor, config: Config) -> torch.Tensor:
        """The product on the tensor cores (kernels/nf4_mma.py)."""
        m, n, k = x.shape[0], self.out_features, self.in_features
        if not mma_tiles(config, n, k, self.qblock):
            raise ValueError(f"{config} does not tile {n}x{k}")
        if m == 0:  # no program to launch
            return torch.empty((0, n), dtype=x.dtype, device=x.device)
        groups = config.block_k // self.qblock
        split = config.split_k
        if split > 1:  # each share's float32 product, summed after
            y = torch.empty((split, m, n), dtype=torch.float32, device=x.device)
        else:
            y = torch.empty((1, m, n), dtype=x.dtype, device=x.device)
        # the PTX takes four bytes a call and gives bfloat16
        fits = _packs(config.block_n * self.qblock // 2, config.num_warps)
        asm = self.split_asm if x.dtype == torch.bfloat16 and fits else ""
        grid = (n // config.block_n, split, triton.cdiv(m, config.block_m))
        _mma_kernel[grid](
            x, self.packed, self.code, self.absmax, self.code2, self.absmax2, self.offset, y,
            m, k, k // 2, x.stride(0), n, m * n, split, BLOCK_M=config.block_m,
            BLOCK_N=config.block_n, GROUPS=groups, QBLOCK=self.qblock, NESTED=self.nested,
            BLOCKSIZE2=self.blocksize2, ASM=asm, PRECISION=dot_precision(x.dtype),
            num_warps=config.num_warps, num_stages=config.num_stages)
        if split == 1:
            return y[0]
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
        _sum_shares_kernel[(triton.cdiv(m * n, 1024),)](y, out, m * n, SPLIT=split, BLOCK=1024)
        return out

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """The whole weight (N, K) in `dtype`."""
        n, k = self.out_features, self.in_features
        out = torch.empty((n, k), dtype=dtype, device=self.packed.device)
        groups = next(g for g in (4, 2, 1) if (k // self.qblock) % g == 0)
        block_n = _largest_dividing(n, (16, 8, 4, 2, 1))
        fits = _packs(block_n * groups * self.qblock // 2, 4)  # num_warps: Triton's default
        asm = self.dequant_asm if dtype == torch.bfloat16 and fits else ""
        _dequant_kernel[(n // block_n, k // (groups * self.qblock))](
            self.packed, *self._args()[1:], out.view(torch.int32) if asm else out, k,
            BLOCK_N=block_n, BLOCK_K=groups * self.qblock, QBLOCK=self.qblock,
            NESTED=self.nested, BLOCKSIZE2=self.blocksize2, ASM=asm)
        return out
