"""Chat prompts: rendering messages with the model's chat template, and the optional policy that
drops the oldest turns until a conversation fits the context window.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidRequestError


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Make OpenAI-shaped messages what Qwen3's template expects: text parts joined into one
    string, null content as "", tool-call arguments as objects rather than JSON strings."""
    result = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise InvalidRequestError(f"messages[{index}] must be an object with a role",
                                      f"messages[{index}]")
        msg = dict(message)
        content = msg.get("content")
        if content is None:
            msg["content"] = ""
        elif isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    parts.append(str(part.get("text", "")))
                elif isinstance(part, str):
                    parts.append(part)
                else:
                    raise InvalidRequestError(
                        f"messages[{index}].content: only text parts are supported",
                        f"messages[{index}].content",
                    )
            msg["content"] = "".join(parts)
        if msg.get("tool_calls"):
            msg["tool_calls"] = [_normalize_tool_call(c, index) for c in msg["tool_calls"]]
        result.append(msg)
    return result


def _normalize_tool_call(call: dict[str, Any], index: int) -> dict[str, Any]:
    call = dict(call)
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass  # the template writes a string as is
    call["function"] = function
    return call


def render_chat(tokenizer, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                chat_template_kwargs: dict[str, Any] | None = None, assistant_prefix: str = "") -> str:
    """The prompt text for a conversation, ending with the assistant's generation prompt."""
    if not messages:
        raise InvalidRequestError("messages must contain at least one message", "messages")
    try:
        text = tokenizer.apply_chat_template(
            normalize_messages(messages),
            tools=tools or None,
            tokenize=False,
            add_generation_prompt=True,
            **(chat_template_kwargs or {}),
        )
    except InvalidRequestError:
        raise
    except Exception as exc:  # jinja errors from malformed input
        raise InvalidRequestError(f"could not render the chat template: {exc}", "messages") from exc
    return text + assistant_prefix


def trim_to_fit(tokenizer, messages: list[dict[str, Any]], budget: int, **render_kwargs) -> tuple[
        list[dict[str, Any]], list[int], str]:
    """Drop the oldest non-system turns until the prompt is at most `budget` tokens.

    The last message always stays; an assistant turn's tool results go with it. Returns the kept
    messages, the prompt's token ids (which may still exceed the budget if nothing can go) and text.
    """
    kept = list(messages)
    while True:
        text = render_chat(tokenizer, kept, **render_kwargs)
        ids = tokenizer.encode(text, add_special_tokens=False)
        droppable = [i for i, m in enumerate(kept[:-1]) if m.get("role") != "system"]
        if len(ids) <= budget or not droppable:
            return kept, ids, text
        first = droppable[0]
        del kept[first]
        while first < len(kept) - 1 and kept[first].get("role") == "tool":
            del kept[first]
