"""Where a step's time goes: the engine's model step (runner.execute) timed and profiled in-process,
without HTTP, on the Qwen3-4B-shaped NF4 model (bench_decode.make_model).

- decode step time at batch 1, 8, 32, 64, 128 (contexts of ~100 tokens), CUDA-synchronised;
- a torch.profiler table of decode steps at batch 1 and 64 (self CPU and CUDA time per op);
- a mixed step: 16 decodes beside a 2,048-token chunk of a prompt whose context reaches 32K;
- a 262,000-token prompt prefilled chunk by chunk (the full window), with the peak memory;
- first, lone prompt chunks' steps (`prompt_steps`: 15 tokens behind a 1,952-token prefix, as
  the shared-system-prompt followers run, against 15 and 128 tokens alone);
- with `--decode-only`, just one stream's decode step (`one_stream`): the engine's step against
  its CUDA graph replayed alone, so the difference is what runs outside the graph; then the
  decode step at 1, 8 and 64 streams; then both again with sampling drawn by PyTorch instead of
  the fused kernels (kernels/sampling.py).
By default the step is the engine's: Triton kernels with CUDA graphs for decode steps;
`--no-cuda-graphs` and `--enforce-eager` (plain PyTorch) measure the others.

    python bench/profile_step.py --out bench/results/profile-step-h200.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_decode import make_model  # noqa: E402
from inference.block_manager import BlockManager  # noqa: E402
from inference.config import EngineSettings  # noqa: E402
from inference.detokenizer import IncrementalDetokenizer  # noqa: E402
from inference.loader import load_model  # noqa: E402
from inference.runner import ModelRunner  # noqa: E402
from inference.sequence import Sequence  # noqa: E402
from inference.types import SamplingParams  # noqa: E402


class Bench:
    def __init__(self, folder: Path, **step_settings):
        settings = EngineSettings(model=str(folder), device_map="cuda:0", fallback=False,
                                  kv_cache_tokens=300_000, **step_settings)
        self.loaded = load_model(settings)
        self.runner = ModelRunner(self.loaded, settings, 262_144)
        self.blocks = BlockManager(self.runner.num_blocks, self.runner.block_size, False)

    def seq(self, prompt_len: int, seed: int) -> Sequence:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(1000, 100_000, (prompt_len,), generator=g).tolist()
        params = SamplingParams(max_tokens=10**6, temperature=0.7, top_p=0.8, top_k=20, seed=seed)
        return Sequence(str(seed), ids, params, set(), IncrementalDetokenizer(self.loaded.tokenizer),
                        lambda chunk: None)

    def step(self, scheduled: list[tuple[Sequence, int]]) -> None:
        for s, n in scheduled:
            self.blocks.allocate(s, n)
        sampled_seqs, sampled = self.runner.execute(scheduled)
        for s, n in scheduled:
            s.num_computed += n
        for row, s in enumerate(sampled_seqs):
            s.token_ids.append(sampled.token_ids[row])
            s.output_ids.append(sampled.token_ids[row])

    def prefill(self, seqs: list[Sequence]) -> None:
        for s in seqs:
            while s.num_computed < len(s.prompt_ids):  # the last chunk samples the first token
                self.step([(s, min(2048, len(s.prompt_ids) - s.num_computed))])

    def release(self, seqs: list[Sequence]) -> None:
        for s in seqs:
            self.blocks.release(s)

    def timed(self, scheduled, steps: int) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            self.step(scheduled)
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps * 1000


def profile_table(bench: Bench, scheduled, rows: int = 25) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        bench.timed(scheduled, 3)
    averages = prof.key_averages()

    def top(key):
        items = sorted(averages, key=lambda e: getattr(e, key, 0), reverse=True)[:rows]
        return [{"op": e.key, "calls": e.count // 3, "ms_per_step": round(getattr(e, key, 0) / 3000, 3)}
                for e in items]
    return {"by_self_cpu": top("self_cpu_time_total"), "by_self_cuda": top("self_device_time_total")}


def prompt_steps(bench: Bench, repeats: int = 12) -> dict:
    """A lone prompt chunk's step (what an idle server runs for a new request, replayed from a
    prompt graph where one holds it), CUDA-synchronised, behind a prefix computed before it (as a
    prefix-cache hit leaves it): the shared-system-prompt followers' case (15 new tokens behind
    1,952) beside short prompts alone; and a profile of the followers' steps."""
    from torch.profiler import ProfilerActivity, profile

    def run(cached: int, new: int, seed: int) -> float:
        s = bench.seq(cached + new, seed)
        if cached:
            bench.step([(s, cached)])
        torch.cuda.synchronize()
        start = time.perf_counter()
        bench.step([(s, new)])
        torch.cuda.synchronize()
        bench.release([s])
        return (time.perf_counter() - start) * 1000

    result = {}
    for cached, new in ((0, 15), (0, 128), (1952, 15)):
        run(cached, new, 7000)  # warm
        times = sorted(run(cached, new, 7001 + i) for i in range(repeats))
        result[f"{new}_new_after_{cached}_ms"] = {"median": round(times[len(times) // 2], 3),
                                                  "min": round(times[0], 3)}
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(3):
            run(1952, 15, 8000 + i)
    averages = prof.key_averages()
    # per run: the eager prefix step and the follower's step together
    result["profile_15_after_1952_by_self_cuda"] = [
        {"op": e.key, "calls": e.count // 3,
         "ms_per_step": round(e.self_device_time_total / 3000, 3)}
        for e in sorted(averages, key=lambda e: e.self_device_time_total, reverse=True)[:20]]
    return result


def one_stream(bench: Bench, steps: int = 200) -> dict:
    """Where one stream's decode step goes: the engine's step (runner.execute: inputs, the graph's
    replay, sampling, the read of the id) against the decode graph replayed alone, back to back
    (the GPU's time), and the profile of the engine's steps."""
    seq = bench.seq(100, 1)
    bench.prefill([seq])
    step_ms = bench.timed([(seq, 1)], steps)
    graph, _ = bench.runner.fast_step.graphs.graphs[1]
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        graph.replay()
    torch.cuda.synchronize()
    replay_ms = (time.perf_counter() - start) / steps * 1000
    profile = profile_table(bench, [(seq, 1)], rows=30)
    bench.release([seq])
    return {"engine_step_ms": round(step_ms, 3), "graph_replay_alone_ms": round(replay_ms, 3),
            "outside_the_graph_ms": round(step_ms - replay_ms, 3), "profile": profile}


def decode_steps(bench: Bench, steps: int = 50) -> dict:
    """The engine's decode step (sampling included), ms, at 1, 8 and 64 streams."""
    seqs = [bench.seq(100, 1000 + i) for i in range(64)]
    bench.prefill(seqs)
    times = {n: round(bench.timed([(s, 1) for s in seqs[:n]], steps), 3) for n in (1, 8, 64)}
    bench.release(seqs)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", default="/tmp/qwen3-4b-shape")
    parser.add_argument("--out", required=True)
    parser.add_argument("--window-seconds", type=float, default=240)
    parser.add_argument("--enforce-eager", action="store_true", help="the plain PyTorch step")
    parser.add_argument("--no-cuda-graphs", action="store_true")
    parser.add_argument("--prompt-steps-only", action="store_true",
                        help="only the lone prompt chunks' steps (prompt_steps)")
    parser.add_argument("--decode-only", action="store_true",
                        help="only one stream's decode step against its graph's replay alone")
    args = parser.parse_args()
    folder = Path(args.folder)
    make_model(folder)
    out = Path(args.out)
    result: dict = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__}

    def save(key, value):
        result[key] = value
        out.write_text(json.dumps(result, indent=2))
        print(key, json.dumps(value)[:3000], flush=True)  # noqa: T201 (a script's report)

    bench = Bench(folder, enforce_eager=args.enforce_eager, cuda_graphs=not args.no_cuda_graphs)
    save("step", bench.runner.describe())
    with torch.inference_mode():
        if args.decode_only:
            save("one_stream", one_stream(bench))
            save("decode_step_ms", decode_steps(bench))
            sampler = bench.runner.sampler
            kernels, sampler.kernels = sampler.kernels, None
            save("one_stream_pytorch_sampling", one_stream(bench))
            save("decode_step_ms_pytorch_sampling", decode_steps(bench))
            sampler.kernels = kernels
            return
        save("prompt_steps", prompt_steps(bench))
        if args.prompt_steps_only:
            return
        seqs = [bench.seq(100, i) for i in range(128)]
        bench.prefill(seqs)
        save("decode_step_ms", {n: round(bench.timed([(s, 1) for s in seqs[:n]], 10), 2)
                                for n in (1, 8, 32, 64, 128)})
        save("profile_batch_1", profile_table(bench, [(seqs[0], 1)]))
        save("profile_batch_64", profile_table(bench, [(s, 1) for s in seqs[:64]]))
        long = bench.seq(40_000, 999)  # room for the profiled steps past 32K
        long.num_computed = 0
        while long.num_computed < 30_720:
            bench.step([(long, 2048)])
        mixed = [(s, 1) for s in seqs[:16]] + [(long, 2048)]
        for s, n in mixed:
            bench.blocks.allocate(s, n)
        torch.cuda.synchronize()
        start = time.perf_counter()
        bench.runner.execute(mixed)
        torch.cuda.synchronize()
        save("mixed_16_decodes_plus_2048_chunk_at_32k_ms", round((time.perf_counter() - start) * 1000, 1))
        save("profile_mixed", profile_table(bench, [(seqs[0], 1)] + [(long, 2048)], rows=15))
        bench.release(seqs + [long])
        torch.cuda.reset_peak_memory_stats()
        window = bench.seq(262_000, 7)
        start = time.perf_counter()
        while window.num_computed < len(window.prompt_ids):
            if time.perf_counter() - start > args.window_seconds:
                break
            bench.step([(window, min(2048, len(window.prompt_ids) - window.num_computed))])
        torch.cuda.synchronize()
        save("full_window", {"prompt_tokens": 262_000, "prefilled": window.num_computed,
                             "seconds": round(time.perf_counter() - start, 1),
                             "sampled_after": len(window.output_ids),
                             "peak_allocated_bytes": torch.cuda.max_memory_allocated()})


if __name__ == "__main__":
    main()
