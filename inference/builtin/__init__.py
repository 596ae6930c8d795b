"""The built-in offline Qwen3 (tiny, random weights, real tokenizer). See `model.py`."""

from .model import BUILTIN_VERSION, WARNING, ensure_builtin, export, is_builtin_folder

__all__ = ["BUILTIN_VERSION", "WARNING", "ensure_builtin", "export", "is_builtin_folder"]
