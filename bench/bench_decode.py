"""Decode benchmark on a GPU: this project's engine versus `transformers` `generate()` on the same
NF4 model, in the same process, with the memory-bandwidth ceiling for reference.

The model has Qwen3-4B-Instruct-2507's exact shape (36 layers, hidden 2560, GQA 32/8, vocab 151936)
with random weights (no weights can be downloaded here), saved unquantized and loaded through the
project's own 4-bit loader, so the numbers are those of the real model's shape and kernels.

    python bench/bench_decode.py --out bench/results/decode-h100.json [--tokens 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference import Engine, EngineSettings, GenerationRequest, SamplingParams  # noqa: E402
from inference.builtin.tokenizer import build_tokenizer  # noqa: E402

QWEN3_4B = dict(
    vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
    rope_theta=5000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=151643,
    eos_token_id=151645, pad_token_id=151643,
)


def make_model(folder: Path) -> None:
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    if (folder / "config.json").exists():
        return
    config = Qwen3Config(**QWEN3_4B)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(temperature=0.7, top_p=0.8, top_k=20, do_sample=True,
                                               eos_token_id=[151645, 151643], pad_token_id=151643)
    model.save_pretrained(folder)
    build_tokenizer().save_pretrained(folder, save_jinja_files=False)
    del model
    torch.cuda.empty_cache()


def copy_bandwidth() -> float:
    """Device-to-device copy, bytes read plus written per second."""
    x = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    torch.cuda.synchronize()
    return 2 * x.numel() * 10 / (time.perf_counter() - start)


def hf_generate(model, prompt_ids: list[int], tokens: int) -> float:
    ids = torch.tensor([prompt_ids], device=model.device)
    kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    model.generate(ids, max_new_tokens=8, do_sample=False)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(ids, **kwargs)
    torch.cuda.synchronize()
    return (out.shape[1] - ids.shape[1]) / (time.perf_counter() - start)


async def engine_runs(engine: Engine, prompt_ids: list[int], tokens: int) -> dict:
    def request(**sampling):
        return GenerationRequest(prompt_token_ids=prompt_ids,
                                 sampling=SamplingParams(max_tokens=tokens, stop_token_ids=[],
                                                         **sampling))

    await engine.generate(GenerationRequest(  # warm-up
        prompt_token_ids=prompt_ids, sampling=SamplingParams(max_tokens=8, temperature=0)))
    greedy = await engine.generate(request(temperature=0))
    sampled = await engine.generate(request(seed=1))
    start = time.perf_counter()
    four = await asyncio.gather(*(engine.generate(request(seed=i)) for i in range(4)))
    wall = time.perf_counter() - start
    long_prompt = (prompt_ids * 200)[:2048]
    ttft = await engine.generate(GenerationRequest(
        prompt_token_ids=long_prompt, sampling=SamplingParams(max_tokens=1)))
    return {
        "greedy_tokens_per_s": greedy.timings.tokens_per_second,
        "greedy_completion_tokens": greedy.usage.completion_tokens,
        "sampled_tokens_per_s": sampled.timings.tokens_per_second,
        "four_concurrent_aggregate_tokens_per_s": sum(r.usage.completion_tokens for r in four) / wall,
        "time_to_first_token_2048_prompt_s": ttft.timings.time_to_first_token,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", default="/tmp/qwen3-4b-shape")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    folder = Path(args.folder)
    make_model(folder)
    engine = Engine(EngineSettings(model=str(folder), device_map="cuda:0", fallback=False))
    await engine.start()
    assert engine.state == "ready", engine.error
    info = engine.info()
    prompt_ids = engine.tokenizer.encode("Write a long story about a lighthouse keeper.")
    ours = await engine_runs(engine, prompt_ids, args.tokens)
    floor = hf_generate(engine.loaded.model, prompt_ids, args.tokens)
    bandwidth = copy_bandwidth()
    weight_bytes = info["weight_memory_bytes"]
    result = {
        "card": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "bitsandbytes": __import__("bitsandbytes").__version__,
        "model_shape": "Qwen3-4B-Instruct-2507 (random weights), NF4 double-quant, bf16 compute",
        "weight_memory_bytes": weight_bytes,
        "quantization": info["quantization"],
        "decode_tokens": args.tokens,
        "hf_generate_greedy_tokens_per_s": floor,
        "engine": ours,
        "engine_over_hf_generate": ours["greedy_tokens_per_s"] / floor,
        "copy_bandwidth_bytes_per_s": bandwidth,
        "bandwidth_ceiling_tokens_per_s": bandwidth / weight_bytes,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))  # noqa: T201 (a script's report)
    await engine.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
