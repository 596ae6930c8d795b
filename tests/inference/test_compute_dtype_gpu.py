"""float16 against bfloat16 compute on the same NF4 model, on a CUDA GPU; skipped without CUDA.

`--compute-dtype auto` picks float16 on GPUs without native bfloat16 (a T4), so the model must not
overflow in float16. The same checkpoint is loaded three times through the real loading path
(`load_model`, bitsandbytes NF4 on CUDA), with float32, float16 and bfloat16 compute, and run on
the same prompt: every hidden state and logit must be finite in float16, and both half-precision
runs must stay close to the float32 one and to each other (same greedy token at nearly every
position).

The model is the built-in one (random weights: its activations are small, so this checks the path
rather than Qwen3's real activation outliers); set NF4SERVE_DTYPE_TEST_MODEL to a local Qwen3
folder (e.g. the default checkpoint from the Hugging Face cache) to check a real model.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import pytest
import torch

from inference.config import EngineSettings
from inference.loader import NATIVE_BF16_CAPABILITY, load_model, pick_compute_dtype

from ..conftest import CACHE_DIR

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

MODEL = os.environ.get("NF4SERVE_DTYPE_TEST_MODEL", "builtin")
FP16_MAX = torch.finfo(torch.float16).max
TEXT = ("The lighthouse keeper climbed the spiral stairs at dusk, counting each of the 217 steps "
        "as his father had taught him. Out at sea, a container ship slid past the reef; its "
        "lights blinked in a rhythm he knew by heart. He wrote the time, 18:42, the wind, "
        "north-north-west at 31 knots, and the pressure, 1009 hPa, in the log. ") * 6


@dataclass
class Run:
    dtype: str
    logits: torch.Tensor  # (positions, vocabulary), float32 on the CPU
    peak: float  # the largest |hidden state| over every layer's output
    finite: bool  # every hidden state and logit is finite
    compute_dtype: str | None  # what the loader reports for the 4-bit layers


def run(dtype: str) -> Run:
    loaded = load_model(EngineSettings(model=MODEL, compute_dtype=dtype, device_map="cuda",
                                       cache_dir=CACHE_DIR))
    try:
        ids = loaded.tokenizer(TEXT, return_tensors="pt").input_ids.to(loaded.device)
        with torch.inference_mode():
            out = loaded.model(input_ids=ids, output_hidden_states=True)
        hidden = [h.float() for h in out.hidden_states]
        finite = all(torch.isfinite(h).all().item() for h in hidden)
        finite = finite and torch.isfinite(out.logits).all().item()
        return Run(dtype, out.logits[0].float().cpu(), max(h.abs().max().item() for h in hidden),
                   finite, loaded.quantization.get("compute_dtype"))
    finally:
        del loaded
        gc.collect()
        torch.cuda.empty_cache()


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    return {dtype: run(dtype) for dtype in ("float32", "float16", "bfloat16")}


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    return ((got - reference).norm() / reference.norm()).item()


def greedy_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.argmax(-1) == b.argmax(-1)).float().mean().item()


def test_each_run_computes_in_its_dtype_through_the_4bit_path(runs):
    for dtype, result in runs.items():
        assert result.compute_dtype == dtype
        assert result.logits.shape[0] > 200  # a long prompt: many positions compared


def test_float16_does_not_overflow(runs):
    fp16 = runs["float16"]
    assert fp16.finite, "a hidden state or logit overflowed to inf/nan in float16"
    assert fp16.peak < FP16_MAX / 8, f"activations reach {fp16.peak:.0f}, near float16's limit"
    assert runs["float32"].peak < FP16_MAX / 8  # the model itself stays in float16's range


def test_half_precision_logits_match_float32_and_each_other(runs):
    reference = runs["float32"].logits
    fp16, bf16 = runs["float16"].logits, runs["bfloat16"].logits
    errors = {name: relative_error(logits, reference)
              for name, logits in (("float16", fp16), ("bfloat16", bf16))}
    assert errors["float16"] < 0.05 and errors["bfloat16"] < 0.08, errors
    # float16 keeps 3 more mantissa bits than bfloat16: unless something saturates, it is closer.
    assert errors["float16"] <= errors["bfloat16"] * 1.5, errors
    cosine = torch.nn.functional.cosine_similarity(fp16, bf16, dim=-1)
    assert cosine.min().item() > 0.99
    assert greedy_agreement(fp16, reference) >= 0.9
    assert greedy_agreement(fp16, bf16) >= 0.9


def test_auto_picks_the_native_dtype_of_this_gpu():
    native = tuple(torch.cuda.get_device_capability()) >= NATIVE_BF16_CAPABILITY
    expected = torch.bfloat16 if native else torch.float16
    assert pick_compute_dtype("auto", "cuda") == expected
    assert pick_compute_dtype("auto", "auto") == expected
