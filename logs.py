"""The process's logging: every record as a text line, or as one JSON object per line
(`--log-format json`), uvicorn's own records included.

JSON lines have `ts` (UTC, ISO 8601), `level`, `logger` and `message`, then the record's extra
fields (the request log's `request_id`, `status`, `prompt_tokens`, ...) and `exception` with the
traceback when there is one.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record was passed as `extra`.
_RECORD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "color_message",  # uvicorn's copy of the message, in ANSI
}


class JSONFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str) -> dict[str, Any]:
    """Set up the root logger; returns the keyword arguments uvicorn needs to keep to it (in JSON,
    uvicorn leaves its loggers to propagate to the root instead of installing its own handlers)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    if log_format != "json":
        return {}
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # configured earlier: undo it
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate, uvicorn_logger.disabled = True, False
        uvicorn_logger.setLevel(logging.NOTSET)  # uvicorn's Config sets its own level after this
    logging.captureWarnings(True)  # Python's warnings too become records, so JSON lines
    _disable_progress_bars()
    return {"log_config": None}


def _disable_progress_bars() -> None:
    """Download and loading progress bars are not records: in JSON they would break the lines."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils.logging import disable_progress_bar
    except ImportError:
        return
    disable_progress_bars()
    disable_progress_bar()
