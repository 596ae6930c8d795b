"""The 4-bit matrix product per shape and batch size: bitsandbytes against the Triton kernels.

For each linear of Qwen3-4B-Instruct-2507 as the fast step runs it (Q, K and V fused; O; gate and
up fused; down) and M = 1 … 128 rows, on NF4 weights with double quantization:
- `bnb`: `bnb.matmul_4bit` on the separate modules (its GEMV at M = 1, dequantize + matmul above);
- `engine` sweep: every candidate the engine times at start-up (nf4_choice.candidates), the CUDA C
  tensor-core kernels among them (kernels/nf4_tc_gemv.py up to four rows, nf4_tc_gemm.py up to
  sixteen);
- `triton`: `NF4Linear.matmul` with the default choice (`default_config`: the GEMV up to two rows,
  our dequantization then cuBLAS above), and `alternatives` to check it against: other GEMV
  tilings (`--sweep gemv`) or the tensor-core kernel's tilings (`--sweep mma`, every time kept in
  the JSON). The engine itself times a few of each against bitsandbytes at start-up for each
  decode batch bucket (inference/kernels/nf4_choice.py);
- `bf16`: the same product on a bf16 weight (cuBLAS), the speed of an unquantized model.
Every kernel is first checked against x @ dequantized(W)ᵀ on fresh random inputs. Times come from a
CUDA graph cycling through enough copies of the weights to exceed the L2 cache several times over,
so each call reads its weight from memory as a real step does.

    python bench/bench_nf4_matmul.py --out bench/results/nf4-matmul-h200.json
    python bench/bench_nf4_matmul.py --sweep mma --rows 1,4,16,32,64,128 \
        --out bench/results/nf4-mma-sweep2-h200.json
    python bench/bench_nf4_matmul.py --sweep engine --rows 1,2,4,8 \
        --out bench/results/nf4-tc-gemv-h200.json
    python bench/bench_nf4_matmul.py --sweep engine --rows 1,4,8,16 \
        --out bench/results/nf4-tc-gemm-h200.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference.kernels.nf4 import (  # noqa: E402
    DEQUANTIZE,
    Config,
    NF4Linear,
    default_config,
    mma_tiles,
)
from inference.kernels.nf4_choice import candidates, graph_time_us  # noqa: E402

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, HEAD_DIM, LAYERS = 2560, 9728, 32, 8, 128, 36
SHAPES = {  # name: output sizes of the modules fused into it, input size
    "qkv": ((HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM), HIDDEN),
    "o": ((HIDDEN,), HEADS * HEAD_DIM),
    "gate_up": ((INTERMEDIATE, INTERMEDIATE), HIDDEN),
    "down": ((HIDDEN,), INTERMEDIATE),
}
ROWS = (1, 2, 4, 8, 16, 32, 64, 128)
L2_BYTES = 60 * 1024**2


def make_modules(outs: tuple[int, ...], k: int) -> list:
    import bitsandbytes as bnb

    modules = []
    for n in outs:
        m = bnb.nn.Linear4bit(k, n, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4",
                              compress_statistics=True)
        m.weight = bnb.nn.Params4bit(torch.randn(n, k) * 0.02, requires_grad=False,
                                     quant_type="nf4", compress_statistics=True)
        modules.append(m.cuda())
    return modules


def dequantized(modules) -> torch.Tensor:
    import bitsandbytes.functional as bf

    return torch.cat([bf.dequantize_4bit(m.weight.data, m.weight.quant_state) for m in modules])


def mma_configs(m: int, n: int, k: int) -> list[Config]:
    """The tensor-core kernel's tilings for m rows: tiles of 32-128 weight rows, 1-8 shares of
    the quantization blocks, 1-2 blocks per iteration (4 warps, 3 stages; `refine` varies those
    around the best)."""
    block_ms = [16] if m <= 16 else [32] if m <= 32 else [64, 32] if m <= 64 else [64, 128]
    options = [Config(block_n, 64 * groups, block_m, 4, 3, split)
               for block_m in block_ms for block_n in (32, 64, 128)
               for split in (1, 2, 4, 8) for groups in (1, 2)]
    return [c for c in options if mma_tiles(c, n, k, 64)]


def refine(config: Config) -> list[Config]:
    """The same tiling with 2, 4 or 8 warps and 2, 3 or 4 pipeline stages."""
    return [Config(config.block_n, config.block_k, config.block_m, warps, stages, config.split_k)
            for warps in (2, 4, 8) for stages in (2, 3, 4)
            if (warps, stages) != (config.num_warps, config.num_stages)]


def alternatives(m: int, n: int, k: int, kinds: str) -> list[Config]:
    if kinds == "mma":
        return mma_configs(m, n, k)
    if kinds == "engine":  # what the engine times at start-up, the CUDA C kernels included
        return candidates(m, n, k, 64, torch.bfloat16)
    if m > 2:
        return [DEQUANTIZE]
    options = []  # the GEMV: rows per program, quantization blocks per iteration, warps, stages
    for block_n in (1, 2, 4, 8):
        for groups in (4, 8, 16, 32):
            for warps in (1, 2, 4):
                per_thread = block_n * groups * 32 // (32 * warps)  # bytes per iteration
                if n % block_n == 0 and 4 <= per_thread <= 64:
                    options += [Config(block_n, groups * 64, 0, num_warps=warps, num_stages=s)
                                for s in (1, 2)]
    return options


def measure(m: int, n: int, k: int, parts: int, sets, fused, weight, bf16_weights,
            sweep: str) -> dict:
    import bitsandbytes as bnb

    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    reference = x.float() @ weight.float().t()
    scale = reference.abs().max().item()

    def error(y: torch.Tensor) -> float:
        return round((y.float() - reference).abs().max().item() / scale, 5)

    def bnb_call(mod):
        return bnb.matmul_4bit(x, mod.weight.t(), quant_state=mod.weight.quant_state)

    row = {"m": m, "config": str(default_config(m, n, k, 64)),
           "triton_rel_error": error(fused[0].matmul(x)),
           "bnb_rel_error": error(torch.cat([bnb_call(mod) for mod in sets[0]], dim=1))}
    row["triton_us"] = round(graph_time_us([lambda f=f: f.matmul(x) for f in fused]), 2)
    row["bnb_us"] = round(graph_time_us(
        [lambda mod=mod: bnb_call(mod) for s in sets for mod in s]) * parts, 2)
    row["bf16_us"] = round(graph_time_us([lambda w=w: x @ w.t() for w in bf16_weights]), 2)
    row["triton_GBps"] = round(n * k / 2 / row["triton_us"] / 1000, 1)
    if sweep != "none":
        timed: dict[Config, float] = {}

        def time_all(configs: list[Config]) -> None:
            for config in configs:
                if config in timed:
                    continue
                try:
                    if not config.dequantizes and error(fused[0].matmul(x, config)) > 2e-2:
                        row.setdefault("wrong", []).append(str(config))
                        continue
                    timed[config] = graph_time_us(
                        [lambda f=f, c=config: f.matmul(x, c) for f in fused], 3)
                except Exception as exc:  # a tile that does not compile for this shape
                    row.setdefault("failed", []).append(f"{config}: {type(exc).__name__}")

        time_all(alternatives(m, n, k, sweep))
        if sweep == "mma":
            for config in sorted(timed, key=timed.get)[:3]:
                time_all(refine(config))
        row["alternatives_us"] = {str(c): round(us, 2)
                                  for c, us in sorted(timed.items(), key=lambda i: i[1])}
        if timed:
            best = min(timed, key=timed.get)
            row["best_alternative"] = {"config": str(best), "us": round(timed[best], 2),
                                       "GBps": round(n * k / 2 / timed[best] / 1000, 1)}
    return row


def bench_shape(name: str, outs: tuple[int, ...], k: int, sweep: str,
                rows_measured: tuple[int, ...]) -> dict:
    n = sum(outs)
    copies = max(2, -(-4 * L2_BYTES // (n * k // 2)))
    sets = [make_modules(outs, k) for _ in range(copies)]
    fused = [NF4Linear.fused(s) if len(s) > 1 else NF4Linear(s[0]) for s in sets]
    weights = [dequantized(s) for s in sets[:1]]
    bf16_weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
                    for _ in range(max(2, -(-4 * L2_BYTES // (n * k * 2))))]
    rows = []
    for m in rows_measured:
        row = measure(m, n, k, len(outs), sets, fused, weights[0], bf16_weights, sweep)
        rows.append(row)
        print(name, json.dumps(row), flush=True)  # noqa: T201 (a script's report)
    return {"n": n, "k": k, "modules": list(outs), "weight_copies": copies, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--sweep", choices=("none", "gemv", "mma", "engine"), default="gemv",
                        help="alternatives timed besides the engine's rule: GEMV tilings up to "
                             "two rows, the tensor-core kernel's tilings, or the candidates the "
                             "engine times at start-up (all recorded)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated shapes")
    parser.add_argument("--rows", default=",".join(map(str, ROWS)),
                        help="comma-separated row counts (default: all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    result = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "bitsandbytes": __import__("bitsandbytes").__version__,
              "triton": __import__("triton").__version__, "shapes": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = tuple(int(r) for r in args.rows.split(","))
    for name in args.shapes.split(","):
        outs, k = SHAPES[name]
        result["shapes"][name] = bench_shape(name, outs, k, args.sweep, rows)
        out.write_text(json.dumps(result, indent=2))
    step = {}
    for i, m in enumerate(rows):
        shapes = result["shapes"].values()
        step[m] = {key: round(LAYERS * sum(s["rows"][i][f"{key}_us"] for s in shapes) / 1000, 3)
                   for key in ("triton", "bnb", "bf16")}
        if all("best_alternative" in sh["rows"][i] for sh in shapes):
            step[m]["best_alternative"] = round(LAYERS * sum(
                sh["rows"][i]["best_alternative"]["us"] for sh in shapes) / 1000, 3)
    result["linears_per_decode_step_ms"] = step
    print("per step (ms)", json.dumps(step), flush=True)  # noqa: T201
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
