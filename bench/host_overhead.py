"""Host overhead: what the server's own Python (HTTP and SSE, scheduler, detokenizer, the hand-over
of chunks between threads) adds to each step, with the model step replaced by a fixed wait. It
needs no GPU, and it is not a model benchmark: no figure here is a tokens/s of a model.

The server runs in a subprocess (`--serve`): the real app on the built-in model, except that
`ModelRunner.launch` and `collect` are a synthetic step on an emulated device: `--launches` small
tensor ops (each releases and takes back the GIL, as a kernel launch from Python does) queue
`--step-ms` of work on a device that runs one step after another; reading the sampled ids waits
without the GIL until the device has finished that step; each sequence then gets a random
ordinary token. Three orders of the host's work are measured: the step's chunks go to the event
loops (`while_waiting`) before the step (`before`: the order up to 736f1f0, and still a CPU's),
once its launches are done (`while-waiting`: a GPU's since then), and the latter with async
scheduling (`async`: the next step is queued before this one's ids are read). In this process,
streaming clients (one httpx client each) measure what they get; a step period above
`--step-ms` is the host's share.

    python bench/host_overhead.py --out bench/results/host-overhead-cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench.bench_serving as serving  # noqa: E402
from bench.bench_server import launch  # noqa: E402

HAND_OVERS = ("before", "while-waiting", "async")


def synthetic_step(step_s: float, launches: int, hand_over: str) -> None:
    """Replace the model step of this process's engine (see the module docstring)."""
    import torch

    from inference import runner
    from inference.sampling import SampledBatch

    scratch = torch.zeros(64)
    rng = random.Random(0)

    device = {"free_at": 0.0}  # when the emulated device has run every step queued so far

    def launch(self, scheduled, carried=None, while_waiting=None):
        if while_waiting is not None and hand_over == "before":
            while_waiting()
            while_waiting = None
        for _ in range(launches):
            scratch.add_(1)
        done_at = max(time.perf_counter(), device["free_at"]) + step_s
        device["free_at"] = done_at
        if while_waiting is not None:
            while_waiting()
        to_sample = [seq for seq, n in scheduled if seq.num_computed + n >= len(seq.token_ids)]
        return to_sample, (to_sample, done_at) if to_sample else None

    def collect(self, pending):
        if pending is None:
            return SampledBatch([], {}, {})
        to_sample, done_at = pending
        time.sleep(max(0.0, done_at - time.perf_counter()))
        return SampledBatch([rng.randrange(1000, 20000) for _ in to_sample], {}, {})

    def carry(self, pending, rows):
        return None  # the synthetic step draws its tokens anew

    runner.ModelRunner.carry = carry
    runner.ModelRunner.launch = launch
    runner.ModelRunner.collect = collect


def serve(args: argparse.Namespace) -> None:
    import app

    synthetic_step(args.step_ms / 1000, args.launches, args.hand_over)
    app.main(["--model", "builtin", "--no-ui", "--port", str(args.port),
              "--max-active-requests", "128",
              "--async-scheduling" if args.hand_over == "async" else "--no-async-scheduling"])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


async def measure(levels: list[int], tokens: int) -> list[dict]:
    import httpx

    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0)) as client:
        await serving.concurrency(client, 4, 16)  # warm-up
        results = []
        for n in levels:
            run = await serving.concurrency(client, n, tokens)
            run.pop("gpu_reserved_bytes", None)
            results.append(run)
        return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hand-over", choices=HAND_OVERS, default="while-waiting",
                        help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=8124)
    parser.add_argument("--step-ms", type=float, default=13.0,
                        help="the synthetic step's device time (13: the H200's at 64 streams)")
    parser.add_argument("--launches", type=int, default=40)
    parser.add_argument("--levels", default="1,64,128")
    parser.add_argument("--orders", default=",".join(HAND_OVERS),
                        help="which orders of the host's work to measure, comma-separated")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    if args.out is None:
        parser.error("--out is required")
    result = {"what": "host overhead per step, with the model step replaced by a fixed wait",
              "cpu": cpu_name(), "python": platform.python_version(), "step_ms": args.step_ms,
              "launches": args.launches, "new_tokens": args.tokens, "runs": {}}
    serving.URL = f"http://127.0.0.1:{args.port}/api/v1"
    for hand_over in args.orders.split(","):
        server = start_server_process(args, hand_over)
        try:
            result["runs"][hand_over] = asyncio.run(
                measure([int(n) for n in args.levels.split(",")], args.tokens))
        finally:
            server.terminate()
            server.wait(60)
        print(hand_over, json.dumps(result["runs"][hand_over]), flush=True)  # noqa: T201
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


def start_server_process(args: argparse.Namespace, hand_over: str) -> subprocess.Popen:
    return launch([sys.executable, __file__, "--serve", "--port", str(args.port), "--step-ms",
                   str(args.step_ms), "--launches", str(args.launches), "--hand-over", hand_over],
                  args.port)


if __name__ == "__main__":
    main()
