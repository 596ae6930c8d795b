"""Where the NF4 kernels' time goes: the code lookup, measured variant by variant.

The engine's Triton NF4 products (inference/kernels/nf4.py) turned each packed byte into its two
weights with a gather from a 256-entry table (`pair_table`, 1 KiB). On the H200 they ran at about
bitsandbytes' speed (0.7-0.8 TB/s at one row, a fifth of the card's bandwidth). A warp's gather
into a 1 KiB table touches up to eight 128-byte lines, so the first hypothesis is that the L1
pipe, not memory, bounds them (about 0.25 L1 wavefronts per weight byte; the card needs ~16 bytes
per clock per multiprocessor to stream at 4.3 TB/s). This script times the same kernels with the
lookup done each of these ways, on Qwen3-4B's four fused shapes, weights larger than the L2:
- `gather`: the 256-entry pair table (the kernels before this study);
- `nibble`: two gathers per byte from the 16 code values (64 bytes: one line per warp);
- `asm`: no memory at all: `prmt` byte permutes pick the bfloat16 bytes of each code out of eight
  registers holding the table (inline PTX, about 6 integer operations per byte; what the engine
  now runs: inference/kernels/nf4_asm.py);
- `asm_bf16`: the same, scaled and paired in bfloat16 inside the PTX (tensor-core kernel only);
- `none`: the nibbles used as numbers (wrong products; the kernel's speed without a lookup).
Two kernel families: the CUDA-core GEMV (`gemv`, one row) and a tensor-core kernel (`tc`, rows
padded to 16 or more) whose weights are scaled in the tile and multiplied in two dots (even and
odd columns). Each variant is checked against the dequantized weight before it is timed
(`none` excepted). `--ncu NAME` runs one variant four times on one shape, for Nsight Compute.

    python bench/nf4_lookup.py --out bench/results/nf4-lookup-h200.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_nf4_matmul import L2_BYTES, SHAPES, make_modules  # noqa: E402
from inference.kernels.nf4 import NF4Linear  # noqa: E402
from inference.kernels.nf4_asm import _program, lookup_asm  # noqa: E402
from inference.kernels.nf4_choice import graph_time_us  # noqa: E402

GATHER, NIBBLE, ASM, NONE, ASM_BF16 = 0, 1, 2, 3, 4
LOOKUPS = {"gather": GATHER, "nibble": NIBBLE, "asm": ASM, "none": NONE, "asm_bf16": ASM_BF16}


def bf16_asm(code: torch.Tensor) -> str:
    """Four bytes ($4) and their four bfloat16 scales ($5, $6) -> the even weights ($0, $1) and
    the odd ones ($2, $3), two bfloat16 to a register, scaled (times -0.0 added: exact)."""
    def scaled(half: int) -> str:
        even, odd, scale = ("$0", "$2", "$5") if half == 0 else ("$1", "$3", "$6")
        return ("prmt.b32 lo, lw, hw, 0x7351; prmt.b32 hi, lw, hw, 0x6240; mov.b32 e, 0x80008000;\n"
                f"fma.rn.bf16x2 {even}, lo, {scale}, e; fma.rn.bf16x2 {odd}, hi, {scale}, e;\n")

    return _program(tuple(float(v) for v in code.float().cpu()), scaled)


@triton.jit
def _even_odd(packed, pairs_ptr, code_ptr, LOOKUP: tl.constexpr, ASM_PAIRS: tl.constexpr):
    """fp32 code values of each byte's high (even) and low (odd) nibble."""
    if LOOKUP == 0:
        pair = tl.load(pairs_ptr + packed.to(tl.int32))
    elif LOOKUP == 2:
        pair = tl.inline_asm_elementwise(ASM_PAIRS, "=r,=r,=r,=r,r", [packed], dtype=tl.int32,
                                         is_pure=True, pack=4)
    if LOOKUP == 1:
        p = packed.to(tl.int32)
        hi = tl.load(code_ptr + (p >> 4))
        lo = tl.load(code_ptr + (p & 15))
    elif LOOKUP == 3:
        p = packed.to(tl.int32)
        hi = (p << 23).to(tl.float32, bitcast=True)
        lo = (p << 27).to(tl.float32, bitcast=True)
    else:
        hi = (pair & -65536).to(tl.float32, bitcast=True)
        lo = (pair << 16).to(tl.float32, bitcast=True)
    return hi, lo


@triton.jit
def _gemv(x_ptr, w_ptr, pairs_ptr, code_ptr, scale_ptr, y_ptr, K, stride_w,
          BLOCK_N: tl.constexpr, GROUPS: tl.constexpr, LOOKUP: tl.constexpr,
          ASM_PAIRS: tl.constexpr):
    """One row: today's GEMV (inference/kernels/nf4.py) with fp32 scales and a chosen lookup."""
    HALF: tl.constexpr = 32
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    g = tl.arange(0, GROUPS)
    t = tl.arange(0, HALF)
    blocks = K // 64
    rows = w_ptr + rn.to(tl.int64)[:, None, None] * stride_w
    acc = tl.zeros((BLOCK_N, GROUPS, HALF), dtype=tl.float32)
    for b0 in range(0, blocks, GROUPS):
        live = b0 + g < blocks
        byte = (b0 + g)[:, None] * HALF + t[None, :]
        packed = tl.load(rows + tl.max_contiguous(byte, [1, 4])[None, :, :],
                         mask=live[None, :, None], other=0)
        hi, lo = _even_odd(packed, pairs_ptr, code_ptr, LOOKUP, ASM_PAIRS)
        both = tl.load(x_ptr + byte, mask=live[:, None], other=0)
        x_even = (both << 16).to(tl.float32, bitcast=True)
        x_odd = (both & -65536).to(tl.float32, bitcast=True)
        scale = tl.load(scale_ptr + rn.to(tl.int64)[:, None] * blocks + (b0 + g)[None, :],
                        mask=live[None, :], other=0.0)
        acc += (hi * x_even[None] + lo * x_odd[None]) * scale[:, :, None]
    y = tl.sum(tl.sum(acc, axis=2), axis=1)
    tl.store(y_ptr + rn, y.to(y_ptr.dtype.element_ty))


@triton.jit
def _tc(x_ptr, w_ptr, pairs_ptr, code_ptr, scale_ptr, y_ptr, M, K, stride_w, stride_xm,
        stride_ym, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        LOOKUP: tl.constexpr, ASM_PAIRS: tl.constexpr, ASM_BF16: tl.constexpr):
    """(M, K) @ (N, K)ᵀ on the tensor cores: BLOCK_K weights of BLOCK_N rows per iteration,
    looked up, scaled in the tile (bfloat16, as bitsandbytes' dequantized weight), and multiplied
    as two dots: even inputs by the high nibbles' weights, odd inputs by the low ones'."""
    HALF_K: tl.constexpr = BLOCK_K // 2
    G: tl.constexpr = BLOCK_K // 64
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    kb = tl.arange(0, HALF_K)
    blocks = K // 64
    w_rows = w_ptr + rn.to(tl.int64)[:, None] * stride_w
    x_rows = x_ptr + rm.to(tl.int64)[:, None] * stride_xm
    s_rows = scale_ptr + rn.to(tl.int64)[:, None] * blocks
    row_ok = rm[:, None] < M
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        packed = tl.load(w_rows + (k0 // 2 + kb)[None, :])
        scale = tl.load(s_rows + (k0 // 64 + tl.arange(0, G))[None, :])
        if LOOKUP == 4:
            sb = tl.broadcast_to(scale.to(tl.bfloat16)[:, :, None], (BLOCK_N, G, 32))
            w_even, w_odd = tl.inline_asm_elementwise(
                ASM_BF16, "=r,=r,=r,=r,r,r,r", [packed, tl.reshape(sb, (BLOCK_N, HALF_K))],
                dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)
        else:
            hi, lo = _even_odd(packed, pairs_ptr, code_ptr, LOOKUP, ASM_PAIRS)
            w_even = tl.reshape(tl.reshape(hi, (BLOCK_N, G, 32)) * scale[:, :, None],
                                (BLOCK_N, HALF_K)).to(x_ptr.dtype.element_ty)
            w_odd = tl.reshape(tl.reshape(lo, (BLOCK_N, G, 32)) * scale[:, :, None],
                               (BLOCK_N, HALF_K)).to(x_ptr.dtype.element_ty)
        x_even = tl.load(x_rows + k0 + 2 * kb[None, :], mask=row_ok, other=0.0)
        x_odd = tl.load(x_rows + k0 + 1 + 2 * kb[None, :], mask=row_ok, other=0.0)
        acc = tl.dot(x_even, tl.trans(w_even), acc)
        acc = tl.dot(x_odd, tl.trans(w_odd), acc)
    tl.store(y_ptr + rm.to(tl.int64)[:, None] * stride_ym + rn[None, :],
             acc.to(y_ptr.dtype.element_ty), mask=row_ok)


class Weights:
    """One fused linear's tensors as the variants read them (fp32 scales, expanded)."""

    def __init__(self, linear: NF4Linear):
        self.n, self.k = linear.out_features, linear.in_features
        self.packed = linear.packed
        self.pairs = linear.pairs
        self.code = linear.code
        if linear.nested:
            from inference.kernels.nf4 import _expanded_absmax

            self.scale = _expanded_absmax(linear.state).contiguous()
        else:
            self.scale = linear.absmax
        self.asm_pairs = lookup_asm(linear.state.code, "pair")
        self.asm_bf16 = bf16_asm(linear.state.code)


def run(variant: dict, w: Weights, x: torch.Tensor) -> torch.Tensor:
    m = x.shape[0]
    y = torch.empty((m, w.n), dtype=x.dtype, device=x.device)
    lookup = LOOKUPS[variant["lookup"]]
    if variant["kind"] == "gemv":
        _gemv[(w.n // variant["block_n"],)](
            x[0].view(torch.int32), w.packed, w.pairs, w.code, w.scale, y[0], w.k, w.k // 2,
            BLOCK_N=variant["block_n"], GROUPS=variant["groups"], LOOKUP=lookup,
            ASM_PAIRS=w.asm_pairs, num_warps=variant["warps"], num_stages=2)
    else:
        grid = (w.n // variant["block_n"], triton.cdiv(m, variant["block_m"]))
        _tc[grid](x, w.packed, w.pairs, w.code, w.scale, y, m, w.k, w.k // 2, x.stride(0),
                  y.stride(0), BLOCK_M=variant["block_m"], BLOCK_N=variant["block_n"],
                  BLOCK_K=variant["block_k"], LOOKUP=lookup, ASM_PAIRS=w.asm_pairs,
                  ASM_BF16=w.asm_bf16, num_warps=variant["warps"],
                  num_stages=variant.get("stages", 3))
    return y


def variants(m: int) -> list[dict]:
    out = []
    if m == 1:
        for lookup in ("gather", "nibble", "asm", "none"):
            for block_n, groups, warps in ((2, 16, 2), (4, 8, 2), (4, 16, 4), (8, 8, 4),
                                           (8, 4, 2), (16, 4, 4)):
                out.append({"kind": "gemv", "lookup": lookup, "block_n": block_n,
                            "groups": groups, "warps": warps})
    block_m = 16 if m <= 16 else 64
    for lookup in ("gather", "nibble", "asm", "asm_bf16", "none"):
        for block_n, block_k, warps in ((16, 256, 4), (32, 256, 4), (64, 128, 4), (64, 256, 4),
                                        (128, 128, 8)):
                out.append({"kind": "tc", "lookup": lookup, "block_m": block_m,
                            "block_n": block_n, "block_k": block_k, "warps": warps})
    return out


def name(v: dict) -> str:
    return "-".join(f"{k}={val}" if k != "kind" else str(val) for k, val in v.items())


def check(v: dict, w: Weights, weight: torch.Tensor, m: int) -> float:
    x = torch.randn(m, w.k, device="cuda", dtype=torch.bfloat16)
    reference = x.float() @ weight.float().t()
    y = run(v, w, x).float()
    return ((y - reference).norm() / reference.norm()).item()


def bench_shape(label: str, outs: tuple[int, ...], k: int, rows: tuple[int, ...]) -> dict:
    import bitsandbytes as bnb
    import bitsandbytes.functional as bf

    n = sum(outs)
    copies = max(2, -(-4 * L2_BYTES // (n * k // 2)))
    sets = [make_modules(outs, k) for _ in range(copies)]
    weights = [Weights(NF4Linear.fused(s) if len(s) > 1 else NF4Linear(s[0])) for s in sets]
    weight = torch.cat([bf.dequantize_4bit(mod.weight.data, mod.weight.quant_state)
                        for mod in sets[0]])
    result = {"n": n, "k": k, "copies": copies, "rows": {}}
    for m in rows:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        row = {"bnb_us": graph_time_us([lambda mod=mod, x=x: bnb.matmul_4bit(
            x, mod.weight.t(), quant_state=mod.weight.quant_state) for s in sets for mod in s])
            * len(outs),
            "bnb_dequant_us": graph_time_us([lambda mod=mod: bf.dequantize_4bit(
                mod.weight.data, mod.weight.quant_state) for s in sets for mod in s]) * len(outs)}
        row["variants"] = {}
        for v in variants(m):
            key = name(v)
            try:
                error = check(v, weights[0], weight, m)
                us = graph_time_us([lambda w=w, v=v, x=x: run(v, w, x) for w in weights])
            except Exception as exc:  # a variant this Triton build cannot compile
                row["variants"][key] = {"failed": f"{type(exc).__name__}: {str(exc)[:300]}"}
                continue
            ok = v["lookup"] == "none" or error < 1e-2
            row["variants"][key] = {"us": round(us, 2), "rel_error": round(error, 5), "ok": ok,
                                    "GBps": round(n * k / 2 / us / 1000, 1)}
        good = {k_: r for k_, r in row["variants"].items() if r.get("ok")}
        for lookup in LOOKUPS:
            mine = {k_: r for k_, r in good.items() if f"lookup={lookup}-" in k_}
            if mine:
                best = min(mine, key=lambda k_: mine[k_]["us"])
                row[f"best_{lookup}"] = {"variant": best, **mine[best]}
        result["rows"][m] = row
        summary = {k_: v_ for k_, v_ in row.items() if k_ != "variants"}
        print(label, m, json.dumps(summary), flush=True)  # noqa: T201 (a script's report)
    return result


def ncu_target(variant_name: str, label: str, m: int) -> None:
    """Run one variant a few times on one shape (for `ncu --launch-skip 2 --launch-count 1`)."""
    outs, k = SHAPES[label]
    w = Weights(NF4Linear.fused(make_modules(outs, k)) if len(outs) > 1
                else NF4Linear(make_modules(outs, k)[0]))
    v = next(v for v in variants(m) if name(v) == variant_name)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    for _ in range(4):
        run(v, w, x)
    torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--rows", default="1,16,64")
    parser.add_argument("--ncu", help="a variant name: run it on --shape, nothing else")
    parser.add_argument("--shape", default="gate_up")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.ncu:
        ncu_target(args.ncu, args.shape, int(args.rows.split(",")[0]))
        return
    rows = tuple(int(r) for r in args.rows.split(","))
    result = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "triton": triton.__version__, "shapes": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for label, (outs, k) in SHAPES.items():
        result["shapes"][label] = bench_shape(label, outs, k, rows)
        out.write_text(json.dumps(result, indent=2))
    summary = {}
    for m in rows:
        for lookup in ("bnb", *LOOKUPS):
            total = 0.0
            for shape in result["shapes"].values():
                row = shape["rows"][m]
                us = row["bnb_us"] if lookup == "bnb" else row.get(f"best_{lookup}", {}).get("us")
                if us is None:
                    total = None
                    break
                total += us
            summary[f"{m}:{lookup}"] = round(36 * total / 1000, 3) if total else None
    result["linears_per_step_ms"] = summary
    out.write_text(json.dumps(result, indent=2))
    print("linears per step (ms):", json.dumps(summary), flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
