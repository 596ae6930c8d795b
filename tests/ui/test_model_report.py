"""The Model tab's report renders whatever `engine.info()` holds."""

from __future__ import annotations

from types import SimpleNamespace

from ui.model_report import BUILTIN_WARNING, format_value, model_markdown, status_markdown


def test_format_value():
    assert format_value("weight_memory_bytes", 39093888) == "37.28 MiB"
    assert format_value("context_window", 262144) == "262,144 tokens"
    assert format_value("parameters", 19841792) == "19,841,792"
    assert format_value("double_quant", True) == "yes"
    assert format_value("gpu", []) == "—"
    assert format_value("revision", None) == "—"


async def test_report_of_the_builtin_engine(builtin_engine):
    report = model_markdown(builtin_engine.info(), builtin_engine)
    assert report.startswith(BUILTIN_WARNING)
    for text in ("`builtin`", "### Quantization", "| Quant type | nf4 |", "| Bits | 4 |",
                 "| Context window | 262,144 tokens |", "### Memory", "### Counters",
                 "| Active requests |"):
        assert text in report, text
    assert "Fallback" not in report  # banners say that, not the table


def test_status_line():
    assert "loading" in status_markdown(SimpleNamespace(state="loading"))
    failed = status_markdown(SimpleNamespace(state="error", error="no such model"))
    assert "no such model" in failed
    ready = SimpleNamespace(state="ready", model_name="m", is_builtin=False)
    assert status_markdown(ready) == "**Model:** `m` · ready"
