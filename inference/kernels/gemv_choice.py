"""Which 4-bit product a one-row input takes, decided at start-up by measuring on this GPU.

A decode step of one sequence multiplies one row by every NF4 weight; that product is bound by
reading the weights, and whether bitsandbytes' GEMV or the Triton one (`_gemv_kernel`) reads them
faster depends on the GPU and the shape. So before the CUDA graphs are captured, `choose_gemv`
times both on the model's own linears, grouped by shape: each candidate is captured in a CUDA graph
that calls it on every linear of the group in turn (so weights come from memory, not the L2 cache,
as in a real step) and replayed. A Triton tiling must first match bitsandbytes' result on a random
input; it is chosen only when it is faster by a margin, and the linears of that shape get it as
`NF4Linear.gemv`. The report (times per shape, the choice) goes to model info's `step`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch

from .nf4 import Config, NF4Linear, gemv_config

logger = logging.getLogger(__name__)

MARGIN = 0.9  # Triton must take at most this fraction of bitsandbytes' time
REPLAYS = 5
TOLERANCE = 2e-2  # largest difference from bitsandbytes, relative to its largest output


def candidates(n: int, k: int, qblock: int) -> list[Config]:
    """The default tiling and a few around it (rows per program, columns per iteration, warps)."""
    options = [gemv_config(n, k, qblock)]
    for block_n, groups, warps in ((1, 32, 1), (2, 16, 1), (2, 16, 2), (4, 8, 2), (4, 16, 4),
                                   (8, 8, 4)):
        if n % block_n == 0 and k % qblock == 0:
            options.append(Config(block_n, groups * qblock, 0, num_warps=warps, num_stages=2))
    unique = []
    for option in options:
        if option is not None and option not in unique:
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
    expected = linear.__class__.__call__(linear, x).float()  # gemv unset: bitsandbytes
    got = linear.matmul(x, config).float()
    scale = expected.abs().max().item() or 1.0
    return bool(torch.isfinite(got).all()) and (got - expected).abs().max().item() <= (
        TOLERANCE * scale)


def choose_gemv(linears: Iterable[NF4Linear], dtype: torch.dtype,
                device: torch.device) -> dict[str, dict]:
    """Time bitsandbytes and the Triton GEMV on one-row inputs per shape; set `gemv` on the
    linears of each shape where Triton wins. Returns {"NxK, 8-bit|fp32 scales": {bitsandbytes_us,
    triton_us, config, kernel}}."""
    groups: dict[tuple[int, int, bool], list[NF4Linear]] = {}
    for linear in linears:
        linear.gemv = None
        key = (linear.out_features, linear.in_features, linear.nested)
        groups.setdefault(key, []).append(linear)
    report = {}
    for (n, k, nested), members in groups.items():
        x = torch.randn(1, k, device=device, dtype=dtype)
        bnb_us = graph_time_us([lambda lin=lin, x=x: lin(x) for lin in members])
        best: tuple[float, Config] | None = None
        for config in candidates(n, k, members[0].qblock):
            try:
                if not _matches(members[0], x, config):
                    logger.warning("Triton GEMV %s gave wrong results for %dx%d", config, n, k)
                    continue
                us = graph_time_us([lambda lin=lin, c=config, x=x: lin.matmul(x, c)
                                    for lin in members])
            except Exception as exc:  # a tiling this GPU or Triton build cannot run
                logger.info("Triton GEMV %s unavailable for %dx%d: %s", config, n, k, exc)
                continue
            if best is None or us < best[0]:
                best = (us, config)
        chosen = best is not None and best[0] <= MARGIN * bnb_us
        if chosen:
            for linear in members:
                linear.gemv = best[1]
        name = f"{n}x{k}, {'8-bit' if nested else 'fp32'} scales"
        report[name] = {"bitsandbytes_us": round(bnb_us, 2),
                        "triton_us": round(best[0], 2) if best else None,
                        "config": str(best[1]) if best else None,
                        "kernel": "triton" if chosen else "bitsandbytes"}
        logger.info("One-row NF4 product %s: %s", name, report[name])
    return report
