"""Shared fixtures: the built-in model (real Qwen3 architecture, real tokenizer, real NF4 path) and
an engine serving it, created once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Tests never touch the Hub, and the built-in model is made once, inside the checkout.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("NF4SERVE_CACHE_DIR", str(ROOT / ".cache"))
CACHE_DIR = Path(os.environ["NF4SERVE_CACHE_DIR"])


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


if _on_gpu():
    # An engine sizes its KV cache to 90% of the card by default, and a test session holds several
    # engines at once: each takes the built-in model's full window instead (about 256 MB).
    os.environ.setdefault("NF4SERVE_KV_CACHE_TOKENS", str(262_144))


@pytest.fixture(scope="session")
def builtin_dir() -> Path:
    from inference.builtin import ensure_builtin

    return ensure_builtin(CACHE_DIR)


@pytest.fixture(scope="session")
def builtin_tokenizer(builtin_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(builtin_dir)


@pytest.fixture(scope="session")
async def builtin_engine(builtin_dir):
    """A ready engine on the built-in model, shared by the whole session."""
    from inference import Engine, EngineSettings

    engine = Engine(EngineSettings(model="builtin", cache_dir=CACHE_DIR, max_active_requests=16,
                                   compute_dtype="float32"))
    await engine.start()
    assert engine.state == "ready", engine.error
    yield engine
    await engine.shutdown()


@pytest.fixture(scope="session")
async def cpu_engine(builtin_engine):
    """The built-in model's engine on the CPU (float32), where a row's numbers do not depend on
    the rest of the batch: what the batch-invariance contract (a seeded request samples the same
    tokens alone and amid others) is stated for. Without CUDA that is the shared engine; on a GPU
    machine a second one, since the GPU step's kernels differ by batch size and so round
    differently (a seeded reply there can part from its solo run where two tokens nearly tie)."""
    if not _on_gpu():
        yield builtin_engine
        return
    from inference import Engine, EngineSettings

    engine = Engine(EngineSettings(model="builtin", cache_dir=CACHE_DIR, max_active_requests=16,
                                   compute_dtype="float32", device_map="cpu"))
    await engine.start()
    assert engine.state == "ready", engine.error
    yield engine
    await engine.shutdown()
