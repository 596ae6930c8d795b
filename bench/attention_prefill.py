"""The paged attention kernel on a prompt chunk over a long context: whole, or split in parts.

Beside running streams the scheduler caps a long prompt's chunk (512 tokens at 32K of context), so
a step's attention is a few tiles over many keys: 16 tiles × 8 KV heads = 128 programs at 32K,
each walking 32K keys alone, fewer programs than the H200 has multiprocessors. Splitting each
tile's context in parts (merged like flash-decoding) multiplies the programs. This times one
layer's prompt launch (Qwen3-4B: 32 query heads, 8 KV heads, head size 128, blocks of 16 tokens,
scattered) for chunk sizes and contexts, with each split count, against the split count the engine
picks (`prompt_parts`), and checks each against the unsplit result.

    python bench/attention_prefill.py --out bench/results/attention-prefill-h200.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference.fast_step import PREFILL_TILE, multiprocessors  # noqa: E402
from inference.kernels.paged_attention import (  # noqa: E402
    AttentionTiles,
    paged_attention,
    prompt_parts,
    tile_plan,
)

HEADS, KV_HEADS, DIM, BLOCK, LAYERS = 32, 8, 128, 16, 36


def layer_ms(q: torch.Tensor, context: int, parts: int, k_cache, v_cache,
             table) -> tuple[float, torch.Tensor]:
    """One layer's prompt launch for queries `q` (chunk, heads, D): ms, and its output."""
    dev, chunk = k_cache.device, q.shape[0]
    i32 = dict(dtype=torch.int32, device=dev)
    tile_seq, tile_q0 = tile_plan([chunk], PREFILL_TILE)
    tiles = AttentionTiles(torch.tensor(tile_seq, **i32), torch.tensor(tile_q0, **i32),
                           torch.tensor([0], **i32), torch.tensor([chunk], **i32),
                           torch.tensor([context], **i32), table, torch.tensor([table.numel()],
                                                                              **i32),
                           PREFILL_TILE, parts, first_token=0, tokens=chunk)
    out = torch.empty_like(q)

    def call():
        paged_attention(q, k_cache, v_cache, tiles, len(tile_seq), BLOCK, DIM ** -0.5, out=out)

    call()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    for _ in range(5):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 5, out.clone()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dev = torch.device("cuda")
    sms = multiprocessors(dev)
    torch.manual_seed(0)
    max_context = 262_144
    blocks = max_context // BLOCK
    k_cache = torch.randn(blocks * BLOCK, KV_HEADS, DIM, device=dev, dtype=torch.bfloat16)
    v_cache = torch.randn_like(k_cache)
    table = torch.randperm(blocks, device=dev).to(torch.int32)
    result = {"card": torch.cuda.get_device_name(0), "layers": LAYERS, "rows": []}
    for chunk, context in ((512, 32768), (256, 32768), (1024, 32768), (2048, 32768),
                           (16, 262_144), (512, 131_072)):
        row = {"chunk": chunk, "context": context,
               "engine_parts": prompt_parts(-(-chunk // PREFILL_TILE), KV_HEADS, sms, context),
               "ms_per_step": {}}
        reference = None
        q = torch.randn(chunk, HEADS, DIM, device=dev, dtype=torch.bfloat16)
        for parts in (1, 2, 4, 8, 16):
            ms, out = layer_ms(q, context, parts, k_cache, v_cache, table)
            if reference is None:
                reference = out.float()
            error = ((out.float() - reference).norm() / reference.norm()).item()
            flops = 4 * chunk * (context - chunk / 2) * DIM * HEADS
            row["ms_per_step"][parts] = {"ms": round(ms * LAYERS, 2),
                                         "TFLOPS": round(flops / ms / 1e9, 1),
                                         "rel_error_vs_whole": round(error, 6)}
        result["rows"].append(row)
        print(json.dumps(row), flush=True)  # noqa: T201 (a script's report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
