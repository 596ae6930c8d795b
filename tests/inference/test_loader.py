"""Loading: the real NF4 path, the 4-bit check, local folders, the compute dtype per GPU, failures that
name the way out, and the fallback, which stands in for the default model only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from inference import (
    Engine,
    EngineSettings,
    ModelLoadError,
    ModelUnavailableError,
    QuantizationError,
)
from inference.loader import check_4bit, load_model, pick_compute_dtype

from ..conftest import CACHE_DIR, ROOT


def test_builtin_loads_in_nf4(builtin_engine):
    info = builtin_engine.info()
    q = info["quantization"]
    assert q["method"] == "bitsandbytes" and q["bits"] == 4 and q["quant_type"] == "nf4"
    assert q["double_quant"] is True
    assert q["linear_4bit_layers"] == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers
    assert info["builtin"] is True and "noise" in info["builtin_warning"]
    assert info["context_window"] == 262144 and info["max_context"] == 262144
    assert info["stop_token_ids"] == [151645, 151643]
    assert info["generation_defaults"]["temperature"] == 0.7
    assert info["generation_defaults"]["top_p"] == 0.8 and info["generation_defaults"]["top_k"] == 20
    assert info["parameters"] > 19_000_000 and info["weight_memory_bytes"] > 0


def test_4bit_check_rejects_unquantized_model(builtin_dir):
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(builtin_dir)
    with pytest.raises(QuantizationError, match="4-bit"):
        check_4bit(plain)


def test_fp4_without_double_quant(builtin_dir):
    loaded = load_model(EngineSettings(model=str(builtin_dir), quant_type="fp4", double_quant=False,
                                       cache_dir=CACHE_DIR))
    assert loaded.quantization["quant_type"] == "fp4"
    assert loaded.quantization["double_quant"] is False
    assert loaded.builtin is True  # recognised by its marker file


def test_export_cli_writes_a_standard_folder(tmp_path):
    target = tmp_path / "model"
    subprocess.run([sys.executable, "-m", "inference.builtin", "export", str(target)],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json"):
        assert (target / name).is_file(), name
    assert "chat_template" in json.loads((target / "tokenizer_config.json").read_text())
    config = json.loads((target / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["vocab_size"] == 151936
    assert config["tie_word_embeddings"] is True
    # Loads with plain transformers, no network, and by path through our 4-bit loader.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoTokenizer.from_pretrained(target).encode("Hello world") == [9707, 1879]
    assert AutoModelForCausalLM.from_pretrained(target).config.model_type == "qwen3"
    loaded = load_model(EngineSettings(model=str(target), cache_dir=CACHE_DIR))
    assert loaded.quantization["linear_4bit_layers"] == 14


def test_unavailable_model_fails_fast_with_way_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as info:  # offline: no network wait to time out
        load_model(EngineSettings(model="nobody/no-such-qwen3", cache_dir=CACHE_DIR))
    assert "--model builtin" in str(info.value) and "HF_HUB_OFFLINE" in str(info.value)


def test_missing_local_folder(tmp_path):
    with pytest.raises(ModelUnavailableError, match="No model folder"):
        load_model(EngineSettings(model=str(tmp_path / "absent"), cache_dir=CACHE_DIR))


def test_not_a_qwen3(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 10}))
    with pytest.raises(ModelLoadError, match="not a Qwen3"):
        load_model(EngineSettings(model=str(tmp_path), cache_dir=CACHE_DIR))


# The default model at a revision that no cache holds: unavailable offline on every machine.
MISSING_REVISION = "nf4serve-test-no-such-revision"


async def test_the_default_model_falls_back_to_builtin_and_health_says_degraded(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = Engine(EngineSettings(revision=MISSING_REVISION, cache_dir=CACHE_DIR))
    await engine.start()
    try:
        assert engine.state == "ready" and engine.is_fallback and engine.is_builtin
        assert engine.info()["fallback"] is True and "Qwen3-4B" in engine.fallback_reason
        health = engine.health()
        assert health["fallback"] is True and health["status"] == "degraded"
        assert "fallback" in health["reason"] and "noise" in health["reason"]
    finally:
        await engine.shutdown()


@pytest.mark.parametrize("model", ["nobody/no-such-qwen3", "/no/such/model-folder"])
async def test_a_named_model_never_falls_back(monkeypatch, model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = Engine(EngineSettings(model=model, cache_dir=CACHE_DIR))  # fallback on, the default
    await engine.start()
    assert engine.state == "error" and not engine.is_fallback and model in engine.error
    assert engine.health()["status"] == "error"


async def test_no_fallback_is_an_error_state(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = Engine(EngineSettings(model="nobody/no-such-qwen3", cache_dir=CACHE_DIR, fallback=False))
    await engine.start()
    assert engine.state == "error" and "nobody/no-such-qwen3" in engine.error
    assert engine.health()["status"] == "error"


def test_prequantized_checkpoint_keeps_its_own_settings(builtin_dir, tmp_path):
    """Like the default unsloth model: a folder saved already in bnb 4-bit loads as it is."""
    loaded = load_model(EngineSettings(model=str(builtin_dir), quant_type="fp4", cache_dir=CACHE_DIR))
    loaded.model.save_pretrained(tmp_path)
    loaded.tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["quantization_config"]["load_in_4bit"] is True
    # Asking for nf4 now changes nothing: the checkpoint's own fp4 settings win.
    again = load_model(EngineSettings(model=str(tmp_path), quant_type="nf4", cache_dir=CACHE_DIR))
    assert again.quantization["quant_type"] == "fp4"
    assert again.quantization["linear_4bit_layers"] == 14


@pytest.mark.parametrize("capability, expected", [
    ((7, 5), torch.float16),  # T4: bfloat16 only emulated, though is_bf16_supported() says True
    ((7, 0), torch.float16),  # V100
    ((8, 0), torch.bfloat16),  # A100
    ((8, 9), torch.bfloat16),  # L4
    ((9, 0), torch.bfloat16),  # H100, H200
])
def test_auto_compute_dtype_is_bfloat16_only_where_native(monkeypatch, capability, expected):
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda device=None: asked.append(device) or capability)
    assert pick_compute_dtype("auto", "auto") == expected
    assert pick_compute_dtype("auto", "cuda:1") == expected and asked[-1] == 1
    assert pick_compute_dtype("auto", "cpu") == torch.bfloat16  # weights on the CPU
    assert pick_compute_dtype("float16", "auto") == torch.float16  # an explicit choice wins
    assert pick_compute_dtype("bfloat16", "auto") == torch.bfloat16


def test_auto_compute_dtype_without_cuda_is_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_compute_dtype("auto", "auto") == torch.bfloat16
