"""Triton kernels for the GPU step: NF4 matrix products, paged attention and the fused glue.

Importing a submodule needs Triton (shipped with PyTorch's CUDA builds); `unavailable_reason`
says, without importing them, whether they can run on a device.
"""

from __future__ import annotations

import importlib.util

import torch


def unavailable_reason(device: torch.device) -> str | None:
    """Why the kernels cannot run on `device`, or None when they can."""
    if device.type != "cuda":
        return "the Triton kernels run on CUDA devices only"
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    major, _ = torch.cuda.get_device_capability(device)
    if major < 7:
        return "the Triton kernels need compute capability 7.0 or newer"
    return None
