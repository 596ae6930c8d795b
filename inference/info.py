"""What the engine reports about itself: model facts, quantization, memory and live counters.

Plain dicts of JSON types, so the API can return them and the UI can show them as they are.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import torch

from .builtin import WARNING as BUILTIN_WARNING

if TYPE_CHECKING:
    from .engine import Engine
    from .scheduler import Scheduler


def process_memory() -> dict[str, Any]:
    try:
        import psutil

        rss = psutil.Process(os.getpid()).memory_info().rss
    except Exception:  # psutil missing or not permitted
        rss = None
    return {"rss_bytes": rss}


def gpu_memory() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        devices.append({
            "index": index,
            "name": props.name,
            "allocated_bytes": int(torch.cuda.memory_allocated(index)),
            "reserved_bytes": int(torch.cuda.memory_reserved(index)),
            "total_bytes": int(props.total_memory),
        })
    return devices


def memory() -> dict[str, Any]:
    return {"process": process_memory(), "gpu": gpu_memory()}


def count_parameters(model) -> int:
    """Logical parameter count: a packed 4-bit tensor counts the weights it holds, not its bytes."""
    total = 0
    for param in model.parameters():
        state = getattr(param, "quant_state", None)
        shape = getattr(state, "shape", None)
        total += int(torch.Size(shape).numel()) if shape is not None else param.numel()
    return total


def model_info(engine: Engine) -> dict[str, Any]:
    """`/model/info`: the model, its memory, defaults, counters, KV cache and step."""
    loaded = engine._require()
    scheduler = engine._scheduler
    counters = scheduler.counters if scheduler else None
    d = engine.defaults
    return {
        "model": engine.model_name,
        "source": loaded.source,
        "revision": loaded.revision,
        "builtin": loaded.builtin,
        "builtin_warning": BUILTIN_WARNING if loaded.builtin else None,
        "fallback": engine.is_fallback,
        "fallback_reason": engine.fallback_reason,
        "quantization": loaded.quantization,
        "parameters": loaded.parameters,
        "weight_memory_bytes": loaded.weight_bytes,
        "device_map": loaded.device_map,
        "dtypes": loaded.dtypes,
        "memory": memory(),
        "context_window": loaded.window,
        "max_context": engine.max_context,
        "generation_defaults": {
            "max_tokens": d.max_tokens, "temperature": d.temperature, "top_p": d.top_p,
            "top_k": d.top_k, "min_p": d.min_p, "repetition_penalty": d.repetition_penalty,
        },
        "stop_token_ids": loaded.stop_token_ids,
        "counters": {
            "requests": counters.requests if counters else 0,
            "completed": counters.completed if counters else 0,
            "cancelled": counters.cancelled if counters else 0,
            "failed": counters.failed if counters else 0,
            "tokens_generated": counters.tokens_generated if counters else 0,
            "mean_tokens_per_second": round(counters.mean_tokens_per_second, 3) if counters else 0.0,
            "active_requests": engine.active_count,
            "queue_depth": engine.queue_depth,
            "steps": counters.steps if counters else 0,
            "steps_launched_ahead": counters.steps_ahead if counters else 0,
        },
        "kv_cache": kv_cache(scheduler),
        "step": scheduler.runner.describe() if scheduler is not None else None,
    }


def kv_cache(scheduler: Scheduler | None) -> dict[str, Any] | None:
    """The paged KV cache: capacity, blocks in use, preemptions and the prefix-cache hit rate."""
    if scheduler is None:
        return None
    runner = scheduler.runner
    return {**scheduler.blocks.stats(),
            "bytes": runner.kv_cache_bytes,
            "dtype": str(runner.dtype).replace("torch.", ""),
            "max_num_batched_tokens": runner.max_batched_tokens,
            "preemptions": scheduler.counters.preemptions}


def _kv_summary(scheduler: Scheduler | None) -> dict[str, Any] | None:
    stats = kv_cache(scheduler)
    if stats is None:
        return None
    keys = ("capacity_tokens", "blocks_total", "blocks_used", "blocks_free", "preemptions")
    return {k: stats[k] for k in keys}


def health(engine: Engine) -> dict[str, Any]:
    """`/health`: ok, loading, degraded (the fallback model serves), stopping or error."""
    status = {"ready": "ok", "loading": "loading", "stopping": "stopping"}.get(engine.state, "error")
    if status == "ok" and engine.is_fallback:  # serving, but not the model that was asked for
        status = "degraded"
    error = engine.error
    if engine._stopping and error is None:
        error = "The server is shutting down." if engine.state == "stopping" else \
            "The server has shut down."
    return {
        "status": status,
        "model_loaded": engine.state == "ready",
        "model": engine.model_name,
        "builtin": engine.is_builtin,
        "fallback": engine.is_fallback,
        "uptime_s": round(time.time() - engine.started_at, 3),
        "memory": memory(),
        "queue_depth": engine.queue_depth,
        "active_requests": engine.active_count,
        "kv_cache": _kv_summary(engine._scheduler),
        "error": error,
        "reason": (f"fallback: the built-in model ({BUILTIN_WARNING}) serves because the "
                   f"default model could not be had: {engine.fallback_reason}")
        if status == "degraded" else None,
    }
