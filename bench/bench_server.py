"""What a user gets over HTTP: the server (`app.py --no-ui`) driven by the official `openai` client,
versus `transformers` `generate()` on the same NF4 model in the same run.

Same model as bench_decode.py (Qwen3-4B-Instruct-2507's shape, random weights, loaded as NF4). The
server is measured first, then stopped, then the floor is measured in this process.

    python bench/bench_server.py --out bench/results/server-h100.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_decode import hf_generate, make_model  # noqa: E402


def start_server(folder: Path, port: int, extra_args: tuple[str, ...] = (),
                 log: Path | None = None) -> subprocess.Popen:
    """Start app.py on the model folder; its output goes to `log` when given (else inherited)."""
    return launch([sys.executable, "app.py", "--model", str(folder), "--no-ui", "--no-fallback",
                   "--port", str(port), "--device-map", "cuda:0", *extra_args], port, log)


def launch(command: list[str], port: int, log: Path | None = None) -> subprocess.Popen:
    """Run a server command; return once its /api/v1/health answers 200."""
    output = open(log, "w") if log is not None else None  # noqa: SIM115 (kept by the process)
    proc = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
    )
    import httpx

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            where = f" (its output: {log})" if log is not None else ""
            raise SystemExit(f"server exited with {proc.returncode}{where}")
        time.sleep(1)
    proc.kill()
    raise SystemExit("server did not start")


async def one_stream(client, tokens: int, seed: int) -> dict:
    start = time.perf_counter()
    first = None
    stream = await client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "Write a long story about a lighthouse."}],
        max_tokens=tokens, seed=seed, stream=True, stream_options={"include_usage": True},
    )
    usage = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter()
        if chunk.usage:
            usage = chunk.usage
    end = time.perf_counter()
    completion = usage.completion_tokens if usage else 0
    return {"ttft_s": (first or end) - start, "completion_tokens": completion,
            "wall_s": end - start,
            "decode_tokens_per_s": (completion - 1) / (end - first) if first and end > first else 0.0}


async def measure(port: int, tokens: int) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/api/v1", api_key="unused")
    await one_stream(client, 8, 0)  # warm-up
    single = await one_stream(client, tokens, 1)
    start = time.perf_counter()
    four = await asyncio.gather(*(one_stream(client, tokens, 10 + i) for i in range(4)))
    wall = time.perf_counter() - start
    return {"single_stream": single,
            "four_streams_aggregate_tokens_per_s": sum(r["completion_tokens"] for r in four) / wall,
            "four_streams_mean_ttft_s": sum(r["ttft_s"] for r in four) / 4}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", default="/tmp/qwen3-4b-shape")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import torch

    folder = Path(args.folder)
    make_model(folder)
    proc = start_server(folder, args.port)
    try:
        server = asyncio.run(measure(args.port, args.tokens))
    finally:
        proc.terminate()
        proc.wait(60)
    from inference import EngineSettings
    from inference.chat import render_chat
    from inference.loader import load_model

    Path(args.out).write_text(json.dumps({"server_openai_client": server}, indent=2))
    loaded = load_model(EngineSettings(model=str(folder), device_map="cuda:0", fallback=False))
    text = render_chat(loaded.tokenizer,
                       [{"role": "user", "content": "Write a long story about a lighthouse."}])
    prompt_ids = loaded.tokenizer.encode(text, add_special_tokens=False)
    floor = hf_generate(loaded.model, prompt_ids, args.tokens)
    result = {
        "card": torch.cuda.get_device_name(0),
        "model_shape": "Qwen3-4B-Instruct-2507 (random weights), NF4 double-quant, bf16 compute",
        "decode_tokens": args.tokens,
        "server_openai_client": server,
        "hf_generate_greedy_tokens_per_s": floor,
        "server_single_stream_over_hf_generate": server["single_stream"]["decode_tokens_per_s"] / floor,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))  # noqa: T201 (a script's report)


if __name__ == "__main__":
    main()
