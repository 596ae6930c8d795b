"""Reading Server-Sent Events in tests: `data:` lines in order, `[DONE]` kept as a string."""

from __future__ import annotations

import json
from typing import Any


def read_events(body: str) -> list[Any]:
    """The `data:` payloads of an SSE body: parsed JSON, or the raw string for `[DONE]`."""
    events: list[Any] = []
    for block in body.split("\n\n"):
        lines = [line[len("data: "):] for line in block.splitlines() if line.startswith("data: ")]
        if lines:
            data = "\n".join(lines)
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def collect_chat_stream(events: list[Any]) -> dict[int, dict[str, Any]]:
    """Reassemble streamed chat chunks per choice index: content, reasoning, tool calls, finish."""
    choices: dict[int, dict[str, Any]] = {}
    for event in events:
        if event == "[DONE]":
            continue
        for choice in event["choices"]:
            state = choices.setdefault(choice["index"], {
                "role": None, "content": "", "reasoning": "", "tool_calls": {}, "finish": None})
            delta = choice["delta"]
            state["role"] = state["role"] or delta.get("role")
            state["content"] += delta.get("content") or ""
            state["reasoning"] += delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls") or []:
                slot = state["tool_calls"].setdefault(call["index"], {
                    "id": None, "name": None, "arguments": ""})
                if "id" in call:
                    slot["id"] = call["id"]
                    slot["name"] = call["function"]["name"]
                slot["arguments"] += call["function"].get("arguments") or ""
            if choice["finish_reason"]:
                assert state["finish"] is None, "one finish_reason per choice"
                state["finish"] = choice["finish_reason"]
    return choices
