"""The built-in model: a tiny Qwen3 with random weights and Qwen3's real tokenizer, made offline.

It exists so that every machine, CI included, can run the whole product through the real loading and
4-bit path without downloading anything. Its architecture is `Qwen3ForCausalLM`; its config mirrors
Qwen3-4B-Instruct-2507 where it matters to the server (vocabulary, special tokens, 262,144-token
window, rope_theta, tied embeddings) and is tiny elsewhere. Weights come from a fixed seed, so every
copy is the same model. ITS OUTPUT IS MEANINGLESS NOISE.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .tokenizer import ENDOFTEXT_ID, IM_END_ID, build_tokenizer

logger = logging.getLogger(__name__)

BUILTIN_VERSION = 2  # bump when the config or the recipe changes: a new folder is made
SEED = 20250725
WARNING = "built-in model with random weights: its output is meaningless noise"

CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "vocab_size": 151936,
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 262144,
    "rope_theta": 5000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": ENDOFTEXT_ID,
    "eos_token_id": IM_END_ID,
    "pad_token_id": ENDOFTEXT_ID,
    "use_cache": True,
    "initializer_range": 0.02,
}

# Qwen3-4B-Instruct-2507's generation_config.json.
GENERATION_CONFIG = {
    "bos_token_id": ENDOFTEXT_ID,
    "pad_token_id": ENDOFTEXT_ID,
    "eos_token_id": [IM_END_ID, ENDOFTEXT_ID],
    "do_sample": True,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
}


def export(directory: str | os.PathLike) -> Path:
    """Write the built-in model as a standard Hugging Face model folder and return its path."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    config = Qwen3Config(**{k: v for k, v in CONFIG.items() if k != "architectures"})
    config.architectures = CONFIG["architectures"]
    torch.manual_seed(SEED)
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(**GENERATION_CONFIG)
    model.save_pretrained(target, safe_serialization=True)
    build_tokenizer().save_pretrained(target, save_jinja_files=False)
    (target / "README.md").write_text(
        f"# nf4serve built-in model (v{BUILTIN_VERSION})\n\nTiny Qwen3ForCausalLM, seed {SEED}: "
        f"{WARNING}.\n",
        encoding="utf-8",
    )
    (target / "builtin.json").write_text(
        json.dumps({"version": BUILTIN_VERSION, "seed": SEED}), encoding="utf-8"
    )
    logger.info("Wrote the built-in model to %s", target)
    return target


def is_builtin_folder(path: str | os.PathLike) -> bool:
    folder = Path(path)
    marker = folder / "builtin.json"
    if not all((folder / name).is_file() for name in ("builtin.json", "config.json",
                                                        "model.safetensors", "tokenizer.json")):
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("version") == BUILTIN_VERSION
    except (OSError, ValueError):
        return False


def ensure_builtin(cache_dir: str | os.PathLike) -> Path:
    """The built-in model's folder under `cache_dir`, created on first use (atomically)."""
    target = Path(cache_dir) / f"builtin-v{BUILTIN_VERSION}"
    if is_builtin_folder(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Creating the built-in model in %s (first use)", target)
    staging = Path(tempfile.mkdtemp(prefix=".builtin-", dir=target.parent))
    try:
        export(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not is_builtin_folder(target):  # not made by a concurrent process meanwhile
                shutil.rmtree(target, ignore_errors=True)
                os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
