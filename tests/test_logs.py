"""The process's logging (`--log-format`): JSON lines with the standard keys, extra fields and
tracebacks; text lines by default; uvicorn left to the root logger in JSON."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from logs import JSONFormatter, configure_logging


@pytest.fixture
def restored_logging():
    """configure_logging replaces the root handlers (pytest's among them): put them back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    uvicorn = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(lg.handlers[:], lg.propagate, lg.disabled, lg.level) for lg in uvicorn]
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for lg, (lg_handlers, propagate, disabled, level) in zip(uvicorn, saved, strict=True):
        lg.handlers[:], lg.propagate, lg.disabled = lg_handlers, propagate, disabled
        lg.setLevel(level)
    logging.captureWarnings(False)


def record(message: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    return logging.getLogger("nf4serve.test").makeRecord(
        "nf4serve.test", logging.WARNING, __file__, 1, message, args, exc_info, extra=extra)


def test_a_json_line_has_the_standard_keys_and_the_extra_fields():
    line = JSONFormatter().format(record("served %s in %.1f s", "x", 1.25, request_id="r-1",
                                         status=200, color_message="\x1b[1m ANSI \x1b[0m"))
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "nf4serve.test"
    assert entry["message"] == "served x in 1.2 s"
    assert entry["ts"].endswith("+00:00") and "T" in entry["ts"]
    assert entry["request_id"] == "r-1" and entry["status"] == 200
    assert "color_message" not in entry and "args" not in entry and "\n" not in line


def test_a_traceback_stays_inside_its_json_line():
    try:
        raise ValueError("boom")
    except ValueError:
        line = JSONFormatter().format(record("failed", exc_info=sys.exc_info()))
    entry = json.loads(line)
    assert "\n" not in line and "ValueError: boom" in entry["exception"]


def test_values_json_cannot_hold_are_written_as_text():
    entry = json.loads(JSONFormatter().format(record("odd", path=object())))
    assert entry["path"].startswith("<object object")


def test_configure_json_writes_every_record_as_json(restored_logging, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    assert configure_logging("info", "json") == {"log_config": None}  # uvicorn: no handlers of its own
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 1)
    logging.getLogger("nf4serve.requests").info("line", extra={"request_id": "abc"})
    logging.getLogger("anything").debug("below the level")
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["logger"], e["message"]) for e in entries] == [
        ("uvicorn.error", "Started server process [1]"), ("nf4serve.requests", "line")]
    assert entries[1]["request_id"] == "abc"


def test_configure_text_keeps_uvicorn_logging(restored_logging, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    assert configure_logging("warning", "text") == {}
    logging.getLogger("nf4serve").warning("plain")
    assert stream.getvalue().rstrip().endswith("WARNING nf4serve: plain")
