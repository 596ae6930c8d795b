"""The Model tab's report: `engine.info()` rendered as Markdown tables, and the one-line engine status.

The info dict is rendered generically (nested dicts become sections, `*_bytes` become MiB/GiB), so a
field the engine adds later shows up without a change here.
"""

from __future__ import annotations

from typing import Any

BUILTIN_WARNING = (
    "⚠️ **This is the built-in test model.** It is a tiny Qwen3 with random weights, loaded through "
    "the same 4-bit path as a real model: its output is noise by design."
)
# Shown first, in this order; everything else follows in the engine's order.
LEADING_SECTIONS = ("quantization", "context", "memory", "counters")
SKIPPED = {"builtin", "builtin_warning", "fallback", "fallback_reason"}  # shown as banners instead
LABELS = {"max_context": "Max context (configured)", "parameters": "Parameters"}


def _label(key: str) -> str:
    if key == "":  # device_map's key for "the whole model"
        return "Whole model"
    if key in LABELS:
        return LABELS[key]
    key = key.removesuffix("_bytes")
    return key.replace("_", " ").strip().capitalize()


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{int(n)} B"


def format_value(key: str, value: Any) -> str:
    """One value as table text: bytes humanised, integers with thousands separators."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in ("context_window", "max_context") and isinstance(value, int):
        return f"{value:,} tokens"
    if key.endswith("_bytes") and isinstance(value, (int, float)):
        return _bytes(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, dict) for v in value):
            return "<br>".join(
                ", ".join(f"{_label(k)}: {format_value(k, v)}" for k, v in item.items())
                for item in value
            ) or "—"
        return ", ".join(str(v) for v in value) or "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {format_value(k, v)}" for k, v in value.items()) or "—"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[tuple[str, str]]) -> str:
    lines = ["| Name | Value |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in rows]
    return "\n".join(lines)


def _flatten(prefix: str, data: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in data.items():
        label = f"{prefix} · {_label(key)}" if prefix else _label(key)
        if isinstance(value, dict) and value:
            rows += _flatten(label, value)
        else:
            rows.append((label, format_value(key, value)))
    return rows


def model_markdown(info: dict[str, Any], engine: Any = None) -> str:
    """The whole Model tab: summary, then one section per nested dict of `info`."""
    parts = []
    if info.get("builtin") or getattr(engine, "is_builtin", False):
        parts.append(BUILTIN_WARNING)
    summary: list[tuple[str, str]] = []
    name = getattr(engine, "model_name", None) or info.get("model") or info.get("name")
    summary.append(("Model", f"`{name}`"))
    sections: dict[str, dict[str, Any]] = {}
    for key, value in info.items():
        if key in SKIPPED or key in ("model", "name"):
            continue
        if isinstance(value, dict):
            sections[key] = value
        else:
            summary.append((_label(key), format_value(key, value)))
    parts.append("### Model\n\n" + _table(summary))
    ordered = [k for k in LEADING_SECTIONS if k in sections]
    ordered += [k for k in sections if k not in ordered]
    for key in ordered:
        if sections[key]:
            parts.append(f"### {_label(key)}\n\n" + _table(_flatten("", sections[key])))
    return "\n\n".join(parts)


def status_markdown(engine: Any) -> str:
    """One line: which model, in what state."""
    state = getattr(engine, "state", None) or "starting"
    name = getattr(engine, "model_name", None)
    if state == "ready":
        kind = " · built-in test model (output is noise)" if getattr(engine, "is_builtin", False) else ""
        return f"**Model:** `{name}` · ready{kind}"
    if state == "error":
        return f"**Model:** failed to load: {getattr(engine, 'error', None) or 'unknown error'}"
    return "**Model:** loading… (this page updates itself when the model is up)"
