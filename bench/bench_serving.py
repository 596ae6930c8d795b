"""Serving benchmark on a GPU: what users get over HTTP as concurrency grows, against `transformers`
`generate_batch` (its continuous batching) and `generate()` on the same NF4 model in the same run.

Model: Qwen3-4B-Instruct-2507's exact shape with random weights (bench_decode.make_model), loaded
as NF4 through the project's loader. The baselines run first in this process, then the server
(`app.py --no-ui`) is started and driven by streaming HTTP clients (httpx, Server-Sent Events):
- 1, 8, 32, 64, 128 concurrent streams of 128 new tokens: aggregate tokens/s, time to first token
  and inter-token latency (p50/p99), peak GPU memory;
- a 32,768-token prompt on the idle server (time to first token), then again while 16 streams run
  (their p99 inter-token latency during the prefill);
- 8 requests sharing a 2,000-token system prompt, one after another (time to first token; how
  many of the 2nd-8th take a fifth of the first's time or more), `--prefix-rounds` times;
- time to first token of a 128-token prompt on the idle server (p50 of 10, one after another);
- a 262,144-token window: a prompt of 262,000 tokens served (given up after --window-timeout).
`--server-args` passes flags to the server (`--enforce-eager`, `--no-cuda-graphs`) to measure the
other step implementations. `--server-log` keeps the server's output in a file and copies its
"Slow step" lines (steps over 0.2 s, with what they held) into the JSON, to trace stalls.

Concurrent streams each have their own client (made before the clock starts; its connection opens
with its request), as independent users would: one shared httpx client fed 64 simultaneous requests one at a time over
its reused keep-alive connections (on the CPU server they reached it a step apart, time to first
token p50 0.57-0.81 s, against 0.19-0.21 s on 64 raw keep-alive sockets or 64 clients).

    python bench/bench_serving.py --out bench/results/serving-h200.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_decode import make_model  # noqa: E402
from bench.bench_server import start_server  # noqa: E402

PORT = 8123
SHARING = 8  # requests a round of the shared system prompt
URL = f"http://127.0.0.1:{PORT}/api/v1"
WORDS = ("time year people way day man thing woman life child world school state family student "
         "group country problem hand part place case week company system program question work "
         "government number night point home water room mother area money story fact month lot "
         "right study book eye job word business issue side kind head house service friend father "
         "power hour game line end member law car city community name president team minute idea "
         "kid body information back parent face others level office door health person art war").split()


def text_of(tokenizer, tokens: int, seed: int) -> str:
    """Random words that tokenize to about `tokens` tokens (distinct per seed: no shared prefix)."""
    rng = random.Random(seed)
    words = [f"[{seed}]"] + [rng.choice(WORDS) for _ in range(tokens)]
    text = " ".join(words)
    while len(tokenizer.encode(text)) > tokens:
        words = words[: int(len(words) * 0.97)]
        text = " ".join(words)
    return text


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def stream_chat(client, messages, max_tokens: int, seed: int,
                      until: asyncio.Event | None = None) -> dict:
    """One streaming chat completion: arrival times of its content chunks and its usage. With
    `until`, the client stops reading (and the server cancels the request) once it is set."""
    body = {"messages": messages, "max_tokens": max_tokens, "seed": seed, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    arrivals, usage = [], None
    async with client.stream("POST", f"{URL}/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                arrivals.append(time.perf_counter())
            if until is not None and until.is_set():
                break
    return {"start": start, "arrivals": arrivals,
            "tokens": usage["completion_tokens"] if usage else len(arrivals),
            "ttft": arrivals[0] - start if arrivals else None,
            "gaps": [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]}


@contextlib.asynccontextmanager
async def own_clients(n: int):
    """n clients, one connection each: n independent users."""
    import httpx

    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(httpx.AsyncClient(timeout=httpx.Timeout(900.0)))
               for _ in range(n)]


async def concurrency(client, n: int, tokens: int) -> dict:
    messages = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    async with own_clients(n) as users:
        start = time.perf_counter()
        runs = await asyncio.gather(*(stream_chat(user, messages, tokens, i)
                                      for i, user in enumerate(users)))
        wall = time.perf_counter() - start
    gaps = [g for r in runs for g in r["gaps"]]
    ttfts = [r["ttft"] for r in runs if r["ttft"] is not None]
    total = sum(r["tokens"] for r in runs)
    return {"streams": n, "tokens": total, "wall_s": round(wall, 3),
            "aggregate_tokens_per_s": round(total / wall, 1),
            "per_stream_tokens_per_s": round(total / wall / n, 2),
            "ttft_p50_s": round(pct(ttfts, 0.5), 4), "ttft_p99_s": round(pct(ttfts, 0.99), 4),
            "itl_p50_s": round(pct(gaps, 0.5), 4), "itl_p99_s": round(pct(gaps, 0.99), 4),
            "gpu_reserved_bytes": [g["reserved_bytes"] for g in
                                   (await client.get(f"{URL}/model/info")).json()["memory"]["gpu"]]}


async def long_prompt(client, tokenizer) -> dict:
    text = text_of(tokenizer, 32_700, seed=1)
    idle = await stream_chat(client, [{"role": "user", "content": text}], 8, 0)
    short = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    done = asyncio.Event()  # the streams run until the long prompt's reply ends, and 0.5 s on
    async with own_clients(16) as users:
        streams = [asyncio.create_task(stream_chat(user, short, 20_000, i, until=done))
                   for i, user in enumerate(users)]
        await asyncio.sleep(1.5)  # the 16 streams are decoding
        text = text_of(tokenizer, 32_700, seed=2)
        during = await stream_chat(client, [{"role": "user", "content": text}], 8, 0)
        window = (during["start"],
                  during["arrivals"][0] if during["arrivals"] else time.perf_counter())
        await asyncio.sleep(0.5)
        done.set()
        runs = await asyncio.gather(*streams)
    gaps = [b - a for r in runs for a, b in zip(r["arrivals"], r["arrivals"][1:], strict=False)
            if window[0] <= b <= window[1] + 0.5]
    return {"prompt_tokens": 32_700, "idle_ttft_s": round(idle["ttft"], 3),
            "ttft_beside_16_streams_s": round(during["ttft"], 3),
            "streams_itl_p99_during_prefill_s": round(pct(gaps, 0.99), 4),
            "streams_itl_max_during_prefill_s": round(max(gaps, default=0.0), 4),
            "gaps_measured": len(gaps)}


async def shared_prefix(client, tokenizer, rounds: int = 3) -> dict:
    """8 requests sharing a 2,000-token system prompt, one after another: the first prefills it,
    the others find it in the prefix cache. `rounds` times, each with a system prompt of its own
    (one first request's time varies by several milliseconds from run to run)."""
    runs = []
    for r in range(rounds):
        system = text_of(tokenizer, 2000, seed=3 + r)
        ttfts = []
        for i in range(SHARING):
            messages = [{"role": "system", "content": system},
                        {"role": "user", "content": f"Question {i}: what is {i} + {i}?"}]
            ttfts.append((await stream_chat(client, messages, 8, i))["ttft"])
        runs.append({"ttft_s": [round(t, 4) for t in ttfts],
                     "first_over_rest_mean": round(ttfts[0] / statistics.mean(ttfts[1:]), 2),
                     "followers_over_a_fifth": sum(t >= ttfts[0] / 5 for t in ttfts[1:])})
    return {"rounds": runs,
            "first_over_rest_mean": statistics.median(r["first_over_rest_mean"] for r in runs),
            "followers_over_a_fifth": sum(r["followers_over_a_fifth"] for r in runs),
            "followers": (SHARING - 1) * rounds}


async def short_prompt_ttft(client, tokenizer) -> dict:
    ttfts = []
    for i in range(10):
        text = text_of(tokenizer, 110, seed=100 + i)  # about 128 with the chat template
        ttfts.append((await stream_chat(client, [{"role": "user", "content": text}], 4, i))["ttft"])
    return {"prompt_tokens_about": 128, "ttft_p50_s": round(pct(ttfts, 0.5), 4),
            "ttft_min_s": round(min(ttfts), 4), "ttft_max_s": round(max(ttfts), 4)}


async def full_window(client, tokenizer, timeout: float) -> dict:
    text = text_of(tokenizer, 262_000, seed=4)
    start = time.perf_counter()
    try:
        run = await asyncio.wait_for(
            stream_chat(client, [{"role": "user", "content": text}], 16, 0), timeout)
    except TimeoutError:
        return {"prompt_tokens_about": 262_000, "completed": False,
                "gave_up_after_s": round(time.perf_counter() - start, 1)}
    return {"prompt_tokens_about": 262_000, "completed": True, "completion_tokens": run["tokens"],
            "ttft_s": round(run["ttft"], 1) if run["ttft"] else None,
            "total_s": round(time.perf_counter() - start, 1)}


def baselines(folder: Path, tokens: int) -> dict:
    """`generate()` (one stream, and 32 prompts padded into one batch) and `generate_batch`."""
    from transformers import GenerationConfig

    from inference import EngineSettings
    from inference.loader import load_model

    loaded = load_model(EngineSettings(model=str(folder), device_map="cuda:0", fallback=False))
    model, tokenizer = loaded.model, loaded.tokenizer
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
        add_generation_prompt=True, tokenize=False)
    ids = tokenizer.encode(prompt)
    result = {}
    greedy = dict(do_sample=False, max_new_tokens=tokens, min_new_tokens=tokens)
    x = torch.tensor([ids], device="cuda")
    model.generate(x, do_sample=False, max_new_tokens=4)
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(x, **greedy)
    torch.cuda.synchronize()
    result["generate_1_tokens_per_s"] = round((out.shape[1] - len(ids)) / (time.perf_counter() - start), 1)
    batch = torch.tensor([ids] * 32, device="cuda")
    start = time.perf_counter()
    out = model.generate(batch, attention_mask=torch.ones_like(batch), **greedy)
    torch.cuda.synchronize()
    result["generate_padded_32_tokens_per_s"] = round(
        32 * (out.shape[1] - len(ids)) / (time.perf_counter() - start), 1)
    config = GenerationConfig(max_new_tokens=tokens, do_sample=True, temperature=0.7, top_p=0.8,
                              top_k=20, eos_token_id=-1, pad_token_id=tokenizer.pad_token_id)
    for n in (32, 64):
        model.generate_batch(inputs=[ids] * 4, generation_config=config)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        outputs = model.generate_batch(inputs=[ids] * n, generation_config=config)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
        produced = sum(len(o.generated_tokens) for o in outputs.values())
        result[f"generate_batch_{n}_tokens_per_s"] = round(produced / wall, 1)
    del model, loaded
    torch.cuda.empty_cache()
    return result


async def main() -> None:
    import httpx
    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", default="/tmp/qwen3-4b-shape")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--levels", default="1,8,32,64,128")
    parser.add_argument("--skip", default="",
                        help="comma-separated: baselines,long,prefix,short,window")
    parser.add_argument("--server-args", default="", help="extra flags for app.py")
    parser.add_argument("--server-log", type=Path, default=None,
                        help="the server's output goes here; its slow-step lines go in the JSON")
    parser.add_argument("--window-timeout", type=float, default=300.0)
    parser.add_argument("--prefix-rounds", type=int, default=3,
                        help="rounds of the shared system prompt (8 requests each)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    folder = Path(args.folder)
    make_model(folder)
    result = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "transformers": __import__("transformers").__version__,
              "model_shape": "Qwen3-4B-Instruct-2507 (random weights), NF4 double-quant, bf16",
              "new_tokens": args.tokens}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(key, value):
        result[key] = value
        out.write_text(json.dumps(result, indent=2))
        print(key, json.dumps(value), flush=True)  # noqa: T201 (a script's report)

    if "baselines" not in skip:
        save("baselines", baselines(folder, args.tokens))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    started = time.perf_counter()
    server = start_server(folder, PORT, tuple(args.server_args.split()), args.server_log)
    save("server_start_s", round(time.perf_counter() - started, 1))
    save("server_args", args.server_args)
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(900.0),
                                     limits=httpx.Limits(max_connections=256)) as client:
            info = (await client.get(f"{URL}/model/info")).json()
            save("kv_cache", info["kv_cache"])
            save("step", info.get("step"))
            await concurrency(client, 4, 16)  # warm-up
            save("concurrency", [await concurrency(client, int(n), args.tokens)
                                 for n in args.levels.split(",")])
            if "long" not in skip:
                save("long_prompt", await long_prompt(client, tokenizer))
            if "prefix" not in skip:
                save("shared_system_prompt",
                     await shared_prefix(client, tokenizer, args.prefix_rounds))
            if "short" not in skip:
                save("short_prompt", await short_prompt_ttft(client, tokenizer))
            if "window" not in skip:
                save("full_window", await full_window(client, tokenizer, args.window_timeout))
            info = (await client.get(f"{URL}/model/info")).json()
            save("kv_cache_after", info["kv_cache"])
            save("counters", info["counters"])  # steps, and those launched ahead (async)
            save("gpu_memory", info["memory"]["gpu"])
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        if args.server_log is not None and args.server_log.exists():
            lines = args.server_log.read_text(errors="replace").splitlines()
            save("slow_steps", [line for line in lines if "Slow step:" in line][:200])


if __name__ == "__main__":
    asyncio.run(main())
