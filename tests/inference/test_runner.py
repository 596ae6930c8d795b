"""The model runner's step on the CPU: what it hands back, and when it runs the scheduler's host
work (`while_waiting`): once per step, before the step's compute on a CPU (on a GPU, once the
forward pass is queued)."""

from __future__ import annotations

import pytest

from inference.block_manager import BlockManager
from inference.config import EngineSettings
from inference.detokenizer import IncrementalDetokenizer
from inference.loader import load_model
from inference.runner import ModelRunner
from inference.sequence import Sequence
from inference.types import SamplingParams

from ..conftest import CACHE_DIR


@pytest.fixture(scope="module")
def runner():
    settings = EngineSettings(model="builtin", cache_dir=CACHE_DIR, kv_cache_tokens=1024)
    loaded = load_model(settings)
    return ModelRunner(loaded, settings, 1024), loaded


@pytest.mark.parametrize("chunk", [20, 12])  # the whole prompt, then only part of it
def test_host_work_runs_once_per_step_before_a_cpu_computes(runner, chunk, monkeypatch):
    model, loaded = runner
    blocks = BlockManager(model.num_blocks, model.block_size, False)
    seq = Sequence("r", list(range(1000, 1020)), SamplingParams(max_tokens=4, temperature=0),
                   set(), IncrementalDetokenizer(loaded.tokenizer), lambda chunk: None)
    blocks.allocate(seq, chunk)
    calls = []
    original = model.sampler.launch.__func__

    def sampler(self, logits, seqs):
        calls.append("sample")
        return original(self, logits, seqs)

    monkeypatch.setattr(type(model.sampler), "launch", sampler)
    sampled, batch = model.execute([(seq, chunk)], lambda: calls.append("hand over"))
    if chunk == 20:
        assert sampled == [seq] and len(batch.token_ids) == 1
        assert calls == ["hand over", "sample"]
    else:
        assert sampled == [] and calls == ["hand over"]
    blocks.release(seq)
