"""Loading a Qwen3 model in bitsandbytes 4-bit, and checking that it really is 4-bit.

`load_model(settings)` resolves the source (Hub id, local folder or the built-in model), refuses what
is not a Qwen3 or cannot be had with a message naming the way out, quantizes an unquantized model to
NF4/FP4 while loading (a pre-quantized checkpoint keeps its own bitsandbytes settings), and returns
a `LoadedModel` with the facts model info reports.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import BUILTIN_MODEL, EngineSettings
from .errors import ModelLoadError, ModelUnavailableError, QuantizationError
from .info import count_parameters
from .types import SamplingDefaults

logger = logging.getLogger(__name__)

QWEN3_MODEL_TYPES = {"qwen3", "qwen3_moe"}
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
WAY_OUT = (
    "Use a local model folder (--model /path/to/folder), a model already in the Hugging Face cache "
    "with HF_HUB_OFFLINE=1, or the built-in offline model (--model builtin)."
)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    source: str  # the folder or id actually loaded
    revision: str | None
    builtin: bool
    window: int  # the model's own context window (max_position_embeddings)
    stop_token_ids: list[int]
    defaults: SamplingDefaults
    quantization: dict[str, Any] = field(default_factory=dict)
    parameters: int = 0
    weight_bytes: int = 0
    device_map: dict[str, str] = field(default_factory=dict)
    dtypes: dict[str, int] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


# Compute capability from which NVIDIA GPUs compute in bfloat16 natively (Ampere: A100, A10G, L4,
# H100...). Below it (T4 is 7.5, V100 7.0) `torch.cuda.is_bf16_supported()` still says True, since it
# counts emulation, and every 4-bit matmul would run in slow emulated bfloat16.
NATIVE_BF16_CAPABILITY = (8, 0)


def cuda_device_index(device_map: str) -> int | None:
    """The GPU a device map names (`cuda:1` -> 1); None for the current one (`auto`, `cuda`)."""
    head, _, index = device_map.partition(":")
    return int(index) if head == "cuda" and index.isdigit() else None


def pick_compute_dtype(setting: str, device_map: str) -> torch.dtype:
    """The 4-bit matmuls' dtype: an explicit setting wins; `auto` is bfloat16 on CPU and on GPUs
    that have it natively (compute capability 8.0 and up), float16 on older GPUs."""
    if setting != "auto":
        return getattr(torch, setting)
    if not torch.cuda.is_available() or device_map.startswith("cpu"):
        return torch.bfloat16
    capability = tuple(torch.cuda.get_device_capability(cuda_device_index(device_map)))
    return torch.bfloat16 if capability >= NATIVE_BF16_CAPABILITY else torch.float16


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick probe, so that an offline machine fails in seconds rather than after retries."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    try:
        with socket.create_connection((host.split(":")[0], 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_source(settings: EngineSettings) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is the built-in model)."""
    from .builtin import ensure_builtin, is_builtin_folder

    if settings.model == BUILTIN_MODEL:
        return str(ensure_builtin(settings.cache_dir)), True
    path = Path(settings.model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model folder: it has no config.json. {WAY_OUT}")
        return str(path), is_builtin_folder(path)
    if settings.model.startswith((".", "/", "~")) or settings.model.count("/") > 1:
        raise ModelUnavailableError(f"No model folder at {settings.model}. {WAY_OUT}")
    return settings.model, False


def _load_config(source: str, settings: EngineSettings):
    from huggingface_hub.constants import is_offline_mode
    from transformers import AutoConfig

    local = Path(source).is_dir()
    offline = settings.offline or is_offline_mode()
    try:
        return AutoConfig.from_pretrained(source, revision=settings.revision, local_files_only=True)
    except OSError as exc:
        if local:
            raise ModelLoadError(f"Cannot read the model config in {source}: {exc}") from exc
    if offline:
        raise ModelUnavailableError(
            f"Model '{source}' is not in the local Hugging Face cache and offline mode is on. {WAY_OUT}"
        )
    if not hub_reachable():
        raise ModelUnavailableError(
            f"Model '{source}' is not cached and the Hugging Face Hub cannot be reached. {WAY_OUT}"
        )
    try:
        return AutoConfig.from_pretrained(source, revision=settings.revision)
    except OSError as exc:
        raise ModelUnavailableError(
            f"Model '{source}' could not be fetched (wrong id or revision?): {exc}. {WAY_OUT}"
        ) from exc


def quantization_config(config, settings: EngineSettings, dtype: torch.dtype):
    """None for a checkpoint already quantized with bitsandbytes 4-bit, else our BitsAndBytesConfig."""
    from transformers import BitsAndBytesConfig

    existing = getattr(config, "quantization_config", None)
    if existing is not None:
        existing = existing if isinstance(existing, dict) else existing.to_dict()
        if existing.get("quant_method") == "bitsandbytes" and existing.get("load_in_4bit"):
            return None
        raise ModelLoadError(
            f"The checkpoint is quantized with {existing.get('quant_method')!r}, not bitsandbytes "
            "4-bit; give an unquantized or a bitsandbytes 4-bit Qwen3 model."
        )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=settings.quant_type,
        bnb_4bit_use_double_quant=settings.double_quant,
        bnb_4bit_compute_dtype=dtype,
    )


def check_4bit(model) -> dict[str, Any]:
    """Count bitsandbytes 4-bit linears; every linear of the decoder layers must be one."""
    import bitsandbytes as bnb

    four_bit, plain = [], []
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            four_bit.append(module)
        elif isinstance(module, torch.nn.Linear) and ".layers." in f".{name}":
            plain.append(name)
    if not four_bit or plain:
        raise QuantizationError(
            f"Expected bitsandbytes 4-bit linear layers; found {len(four_bit)} 4-bit and "
            f"{len(plain)} unquantized decoder linears (e.g. {plain[:3]})."
        )
    weight = four_bit[0].weight
    state = getattr(weight, "quant_state", None)
    return {
        "method": "bitsandbytes",
        "bits": 4,
        "quant_type": getattr(weight, "quant_type", None) or getattr(state, "quant_type", None),
        "double_quant": bool(getattr(state, "nested", False)),
        "compute_dtype": str(four_bit[0].compute_dtype).replace("torch.", "")
        if four_bit[0].compute_dtype is not None
        else None,
        "linear_4bit_layers": len(four_bit),
    }


def sampling_defaults(model) -> SamplingDefaults:
    gen = getattr(model, "generation_config", None)
    base = SamplingDefaults()
    if gen is None:
        return base

    def pick(name: str, default):
        value = getattr(gen, name, None)
        return default if value is None else value

    return SamplingDefaults(
        max_tokens=base.max_tokens,
        temperature=float(pick("temperature", base.temperature)),
        top_p=float(pick("top_p", base.top_p)),
        top_k=int(pick("top_k", base.top_k)),
        min_p=float(pick("min_p", base.min_p)),
        repetition_penalty=float(pick("repetition_penalty", base.repetition_penalty)),
    )


def load_model(settings: EngineSettings) -> LoadedModel:
    """Load the configured model in 4-bit, or raise a ModelLoadError that says what to do."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if settings.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    source, builtin = resolve_source(settings)
    config = _load_config(source, settings)
    if getattr(config, "model_type", None) not in QWEN3_MODEL_TYPES:
        raise ModelLoadError(
            f"'{settings.model}' is a {getattr(config, 'model_type', 'unknown')!r} model, not a "
            f"Qwen3 model; this server serves Qwen3 models only. {WAY_OUT}"
        )
    dtype = pick_compute_dtype(settings.compute_dtype, settings.device_map)
    kwargs: dict[str, Any] = {"dtype": dtype, "device_map": settings.device_map}
    if settings.revision:
        kwargs["revision"] = settings.revision
    if settings.attn_implementation:
        kwargs["attn_implementation"] = settings.attn_implementation
    quant = quantization_config(config, settings, dtype)
    if quant is not None:
        kwargs["quantization_config"] = quant
    logger.info("Loading %s in 4-bit (%s, compute %s) on %s", source, settings.quant_type,
                dtype, settings.device_map)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=settings.revision)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        raise ModelLoadError(f"Loading '{settings.model}' failed: {exc}") from exc
    model.eval()
    quantization = check_4bit(model)
    stop_ids = [i for i in (tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS) if i is not None]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>"
    dtypes: dict[str, int] = {}
    for param in model.parameters():
        name = str(param.dtype).replace("torch.", "")
        dtypes[name] = dtypes.get(name, 0) + param.numel()
    device_map = getattr(model, "hf_device_map", None) or {"": str(next(model.parameters()).device)}
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=settings.model,
        source=source,
        revision=settings.revision,
        builtin=builtin,
        window=int(getattr(config, "max_position_embeddings", 0) or tokenizer.model_max_length),
        stop_token_ids=stop_ids,
        defaults=sampling_defaults(model),
        quantization=quantization,
        parameters=count_parameters(model),
        weight_bytes=int(model.get_memory_footprint()),
        device_map={k: str(v) for k, v in device_map.items()},
        dtypes=dtypes,
    )
