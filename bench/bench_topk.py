"""The top-k of sampling on a GPU: one `torch.topk` over the whole vocabulary (what the sampler
does) against two stages (`top_candidates`: the top k of each chunk of ids, then of those), per
chunk size, for batches of 1 to 128 rows of Qwen3's 151,936 logits (float32, as the sampler gets
them), k = 20 (the default model's top_k) and 50. Each variant is checked against `torch.topk`
(same values), then timed over 200 calls in a CUDA graph (kernel time: what a step pays on the
device). The one-stream profile (profile-one-stream-h200.json) put the top-k near 0.1 ms of a
step; two stages won only at one row (by 15 µs) and lost from 8 rows up, so the sampler keeps
`torch.topk` (bench/results/topk-h200.json).

    python bench/bench_topk.py --out bench/results/topk-h200.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference.kernels.nf4_choice import graph_time_us  # noqa: E402

VOCAB = 151936
CALLS = 200


def graph_us(fn) -> float:
    """Microseconds per call of `fn`, CALLS calls captured in one CUDA graph and replayed."""
    return graph_time_us([fn] * CALLS)


def top_candidates(logits: torch.Tensor, k: int, chunk: int | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.topk(logits, k, dim=-1)` in two stages: the top k of every `chunk` ids, then the top
    k of those, which are the same k values. Ids past the vocabulary (padding, -inf) come out only
    for rows with fewer than k finite values, clamped to the last id."""
    rows, vocab = logits.shape
    if chunk is None or k > chunk or vocab < 4 * chunk:
        return torch.topk(logits, k, dim=-1)
    chunks = -(-vocab // chunk)
    padded = torch.nn.functional.pad(logits, (0, chunks * chunk - vocab), value=float("-inf"))
    values, ids = torch.topk(padded.view(rows, chunks, chunk), k, dim=-1, sorted=False)
    ids = ids + torch.arange(0, chunks * chunk, chunk, device=logits.device).unsqueeze(1)
    values, best = torch.topk(values.view(rows, chunks * k), k, dim=-1)
    return values, ids.view(rows, chunks * k).gather(1, best).clamp_(max=vocab - 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__, "vocab": VOCAB,
              "rows": []}
    for rows in (1, 8, 64, 128):
        logits = torch.randn(rows, VOCAB, device="cuda")
        for k in (20, 50):
            want = torch.topk(logits, k, dim=-1)
            entry = {"rows": rows, "k": k, "topk_us": round(graph_us(
                lambda x=logits, k=k: torch.topk(x, k, dim=-1)), 1)}
            for chunk in (1024, 2048, 4096):
                got = top_candidates(logits, k, chunk)
                assert torch.equal(got[0], want[0]), (rows, k, chunk)
                entry[f"two_stages_{chunk}_us"] = round(graph_us(
                    lambda x=logits, k=k, c=chunk: top_candidates(x, k, c)), 1)
            result["rows"].append(entry)
            print(json.dumps(entry), flush=True)  # noqa: T201 (a script's report)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
