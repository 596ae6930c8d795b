"""Settings of the inference engine: which model, how it is quantized and placed, and the engine's limits.

Every field is an environment variable (prefix `NF4SERVE_`) and, through the server's settings class
that extends this one, a command-line flag (`--model`, `--quant-type`, ...). The README's configuration
table is generated from these fields' descriptions, and a test keeps the two in sync.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "unsloth/Qwen3-4B-Instruct-2507-bnb-4bit"
BUILTIN_MODEL = "builtin"


def fallback_allowed(settings: EngineSettings) -> bool:
    """Whether the built-in model may stand in when the model cannot be had: only for the default
    model, never for one named on purpose (`--model`, NF4SERVE_MODEL), and not with
    `--no-fallback`."""
    named = "model" in settings.model_fields_set
    return settings.fallback and not named and settings.model != BUILTIN_MODEL


def _default_cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nf4serve"


class EngineSettings(BaseSettings):
    """Model loading and engine limits."""

    model_config = SettingsConfigDict(
        env_prefix="NF4SERVE_", extra="ignore", validate_default=True, protected_namespaces=()
    )

    model: str = Field(
        DEFAULT_MODEL,
        description="Hugging Face model id or local folder of a Qwen3 model, or `builtin` for the "
        "tiny offline model with random weights (its output is noise).",
    )
    revision: str | None = Field(None, description="Model revision (branch, tag or commit).")
    quant_type: Literal["nf4", "fp4"] = Field(
        "nf4", description="4-bit type used when quantizing an unquantized model while loading."
    )
    double_quant: bool = Field(
        True, description="Quantize the 4-bit scales as well (saves about 0.4 bits per weight)."
    )
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Dtype of the 4-bit matmuls; `auto` is bfloat16 on CPU and on GPUs that compute "
        "in it natively (compute capability 8.0 and up: A100, A10G, L4, H100), float16 on older "
        "GPUs (T4, V100).",
    )
    device_map: str = Field(
        "auto", description="Where the weights go: `auto`, `cuda`, `cuda:0`, `cpu`..."
    )
    max_context: int | None = Field(
        None,
        ge=16,
        description="Largest prompt plus output in tokens; default: the model's own window "
        "(262,144 for Qwen3-4B-Instruct-2507).",
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None, description="Attention kernel; default: transformers' choice (sdpa)."
    )
    offline: bool = Field(
        False, description="Never contact the Hugging Face Hub (sets HF_HUB_OFFLINE=1)."
    )
    fallback: bool = Field(
        True,
        description="When no model is named and the default one cannot be had (offline and not "
        "cached), start the built-in model instead and say so (`/health` says `degraded`); "
        "`--no-fallback` makes that failure fatal. A model named with `--model` never falls back: "
        "if it cannot be loaded, the server does not start.",
    )
    trim_chat_history: bool = Field(
        False,
        description="Drop the oldest non-system chat turns until the prompt fits the context "
        "window, instead of rejecting the request.",
    )
    trust_request_chat_template: bool = Field(
        False,
        description="Accept `chat_template` (a Jinja template) in a request's "
        "`chat_template_kwargs`; off by default, since a template is code the server runs.",
    )
    max_active_requests: int = Field(
        128, ge=1, le=1024,
        description="Requests decoded together in one batch; the rest wait in the queue.",
    )
    max_queued_requests: int = Field(
        64, ge=0, description="Waiting requests beyond which new ones get 503 (overloaded)."
    )
    max_num_batched_tokens: int | None = Field(
        None, ge=16,
        description="Tokens computed per step over all requests (decodes plus prompt chunks); a "
        "longer prompt is prefilled in chunks beside the running streams. Default: 2048 on GPU, "
        "512 on CPU.",
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0,
        description="Fraction of the GPU's memory this server may use: weights, activations and "
        "the paged KV cache, which takes what is left.",
    )
    kv_cache_tokens: int | None = Field(
        None, ge=16,
        description="Size of the paged KV cache in tokens; default: from "
        "--gpu-memory-utilization on GPU, a quarter of free memory (at most the context window) "
        "on CPU.",
    )
    block_size: int = Field(16, ge=1, le=256, description="Tokens per KV cache block.")
    prefix_caching: bool = Field(
        True,
        description="Reuse the KV cache of a prompt prefix already computed (a shared system "
        "prompt, an earlier turn of a chat); `--no-prefix-caching` turns it off.",
    )
    cuda_graphs: bool = Field(
        True,
        description="On CUDA, capture the decode step in CUDA graphs (one per batch-size bucket), "
        "and a lone prompt chunk of up to 256 tokens, at start-up and replay them; "
        "`--no-cuda-graphs` runs every step eagerly.",
    )
    async_scheduling: bool | None = Field(
        None,
        description="While only decodes run, queue each step on the device before the previous "
        "one's tokens are read back, so that the host's work per token (text, streaming, "
        "scheduling) overlaps the device's; a step that needs the tokens first (a grammar, "
        "penalties, logprobs, a request to admit) waits for them. Default: on with CUDA, off on "
        "CPU, where nothing overlaps.",
    )
    enforce_eager: bool = Field(
        False,
        description="Run the plain PyTorch step (bitsandbytes matmuls, SDPA attention) instead of "
        "the Triton kernels and CUDA graphs; for debugging and comparison.",
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Folder for the built-in model and other generated files.",
    )
