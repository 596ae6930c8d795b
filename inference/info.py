"""What the engine reports about itself: model facts, quantization, memory and live counters.

Plain dicts of JSON types, so the API can return them and the UI can show them as they are.
"""

from __future__ import annotations

import os
from typing import Any

import torch


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
