"""Which 4-bit product each batch size takes, decided at start-up by measuring on this GPU.

A decode step multiplies one row per sequence by every NF4 weight. Whether bitsandbytes' kernels
(its GEMV for one row; dequantize-then-matmul above) or ours are faster depends on the GPU, the
shape and the number of rows. Ours: where NVRTC is found, the CUDA C tensor-core kernels
(nf4_tc_gemv.py's up to four rows, nf4_tc_gemm.py's from two to sixteen); `_gemv_kernel` for one
or two rows; from two rows the tensor-core kernel of nf4_mma.py, and DEQUANTIZE (our
dequantization then cuBLAS). So before the CUDA graphs are captured, `choose_kernels` times them
on the model's own linears, grouped by shape, for each row bucket up to the largest decode batch:
each candidate is captured in a CUDA graph that calls it on every linear of the group in turn (so
weights come from memory, not the L2 cache, as in a real step) and replayed. A candidate of ours must first match bitsandbytes' result on a random
input; it is chosen only when it is faster by a margin, and then recorded in `NF4Linear.triton`
for that bucket (None: bitsandbytes). Rows above the largest bucket (prompt chunks) take
DEQUANTIZE where it beat bitsandbytes at the largest bucket (`NF4Linear.above`; the tensor-core
kernel's cost grows with the rows, DEQUANTIZE's does not), else bitsandbytes. The report (times
per shape and bucket, the choice: "cuda", "triton" or "bitsandbytes") goes to model info's `step`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch

from . import nf4_tc_gemm, nf4_tc_gemv
from .nf4 import (
    DEQUANTIZE,
    GEMV_MAX_ROWS,
    Config,
    NF4Linear,
    gemv_config,
    mma_tiles,
    tc_gemm_config,
    tc_gemv_config,
)

logger = logging.getLogger(__name__)

MARGIN = 0.9  # ours must take at most this fraction of bitsandbytes' time
REPLAYS = 5
TOLERANCE = 2e-2  # largest difference from bitsandbytes, relative to its largest output
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
SPLIT_BELOW = 256  # tiles of 16 rows under which the CUDA C kernels also try splitting K


def mma_candidates(m: int, n: int, k: int, qblock: int) -> list[Config]:
    """Tensor-core tilings for `m` rows (kernels/nf4_mma.py): a tile of x rows that holds them
    (16 to 64), 64 or 128 weight rows with 2 or 4 warps, one quantization block an iteration
    (two for O), the blocks shared among 8 or 4 programs: around the best of the H200 sweep
    (bench/results/nf4-mma-sweep2-h200.json: QKV, O and gate/up at 1-128 rows)."""
    block_m = min(64, max(16, 1 << (m - 1).bit_length()))
    options = [Config(block_n, groups * qblock, block_m, warps, 3, split)
               for block_n, groups, split, warps in ((128, 1, 8, 4), (128, 1, 8, 2),
                                                     (64, 1, 8, 4), (64, 1, 8, 2),
                                                     (128, 1, 4, 4), (64, 2, 8, 4))]
    return [c for c in options if mma_tiles(c, n, k, qblock)]


def candidates(m: int, n: int, k: int, qblock: int,
               dtype: torch.dtype = torch.bfloat16) -> list[Config]:
    """What is worth timing for `m` rows: the CUDA C tensor-core kernels, the GEMV up to four
    rows and the other from two to sixteen (4, 8 or 16 warps sharing each 16 rows; below
    SPLIT_BELOW tiles also 4 or 8 warps in each of 2 or 4 blocks sharing K), GEMV tilings up to
    two rows (a few around the rule's), the tensor-core kernel's and DEQUANTIZE from two."""
    options: list[Config | None] = []
    # few tiles of 16 rows for the GPU's multiprocessors (O and down: 160): K split over blocks
    splits = [(warps, 1) for warps in (4, 8, 16)] + (
        [(warps, split) for warps in (4, 8) for split in (2, 4)] if n // 16 < SPLIT_BELOW else [])
    if nf4_tc_gemv.fits(m, n, k, qblock, dtype):
        options += [tc_gemv_config(warps, split) for warps, split in splits]
    if m >= 2 and nf4_tc_gemm.fits(m, n, k, qblock, dtype):
        options += [tc_gemm_config(warps, split) for warps, split in splits]
    if m <= GEMV_MAX_ROWS:
        options += [gemv_config(n, k, qblock)] + [
            Config(block_n, groups * qblock, 0, num_warps=warps, num_stages=2)
            for block_n, groups, warps in ((4, 8, 2), (4, 16, 4), (2, 16, 2), (8, 8, 4),
                                           (4, 16, 2), (1, 32, 1))]
    if m >= 2:
        options += mma_candidates(m, n, k, qblock) + [DEQUANTIZE]
    unique = []
    for option in options:
        if option is None or option in unique:
            continue
        if option.dequantizes or option.compiled or n % option.block_n == 0:
            unique.append(option)
    return unique


def graph_time_us(calls: list[Callable[[], torch.Tensor]], replays: int = REPLAYS) -> float:
    """GPU time of one call, averaged over `calls` captured in one CUDA graph and replayed."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for call in calls:  # warm-up: compiles and allocates outside the capture
            call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    elapsed_us = start.elapsed_time(end) * 1000 / replays / len(calls)
    del graph
    return elapsed_us


def _matches(linear: NF4Linear, x: torch.Tensor, config: Config) -> bool:
    expected = linear.bitsandbytes(x).float()
    got = linear.matmul(x, config).float()
    scale = expected.abs().max().item() or 1.0
    return bool(torch.isfinite(got).all()) and (got - expected).abs().max().item() <= (
        TOLERANCE * scale)


def _choose(members: list[NF4Linear], m: int, dtype: torch.dtype,
            device: torch.device) -> dict:
    """Time bitsandbytes and the candidates on `m` rows for linears of one shape."""
    n, k = members[0].out_features, members[0].in_features
    x = torch.randn(m, k, device=device, dtype=dtype)
    bnb_us = graph_time_us([lambda lin=lin, x=x: lin.bitsandbytes(x) for lin in members])
    best: tuple[float, Config] | None = None
    dequantize_us = None
    for config in candidates(m, n, k, members[0].qblock, dtype):
        try:
            if not _matches(members[0], x, config):
                logger.warning("NF4 product %s gave wrong results for %d rows of %dx%d",
                               config, m, n, k)
                continue
            us = graph_time_us([lambda lin=lin, c=config, x=x: lin.matmul(x, c)
                                for lin in members])
        except Exception as exc:  # a tiling this GPU or Triton build cannot run
            logger.info("NF4 product %s unavailable for %dx%d: %s", config, n, k, exc)
            continue
        if config.dequantizes:
            dequantize_us = us
        if best is None or us < best[0]:
            best = (us, config)
    chosen = best is not None and best[0] <= MARGIN * bnb_us
    kernel = "bitsandbytes"
    if chosen:
        kernel = "cuda" if best[1].compiled else "triton"
    for linear in members:  # buckets are measured in increasing order
        linear.triton[m] = best[1] if chosen else None
        # rows above the largest bucket (prompt chunks): DEQUANTIZE where it beat bitsandbytes
        linear.above = DEQUANTIZE if dequantize_us is not None and (
            dequantize_us <= MARGIN * bnb_us) else None
    return {"bitsandbytes_us": round(bnb_us, 2),
            "triton_us": round(best[0], 2) if best else None,
            "config": str(best[1]) if best else None,
            "kernel": kernel,
            "dequantize_us": round(dequantize_us, 2) if dequantize_us is not None else None}


def choose_kernels(linears: Iterable[NF4Linear], dtype: torch.dtype, device: torch.device,
                   max_rows: int) -> dict[str, dict[int, dict]]:
    """Measure each shape at each row bucket up to `max_rows`; record our kernels' wins on the
    linears. Returns {"NxK, 8-bit|fp32 scales": {rows: {bitsandbytes_us, triton_us (the best of
    ours, the CUDA C kernels included), config, kernel}}}."""
    groups: dict[tuple[int, int, bool], list[NF4Linear]] = {}
    for linear in linears:
        linear.use_bitsandbytes()
        key = (linear.out_features, linear.in_features, linear.nested)
        groups.setdefault(key, []).append(linear)
    buckets = [m for m in ROW_BUCKETS if m <= max(1, max_rows)]
    report: dict[str, dict[int, dict]] = {}
    for (n, k, nested), members in groups.items():
        name = f"{n}x{k}, {'8-bit' if nested else 'fp32'} scales"
        report[name] = {m: _choose(members, m, dtype, device) for m in buckets}
        logger.info("NF4 products %s: %s", name, {m: (r["kernel"], r["bitsandbytes_us"],
                                                      r["triton_us"])
                                                  for m, r in report[name].items()})
    return report
