"""The playground's chat bookkeeping, as pure functions over Gradio's message dicts.

The Chatbot shows more than the conversation: a collapsed "Reasoning" block, a per-reply statistics
line and error notes (`ui.reply`). All three are messages with a `metadata.title`, Gradio's
convention for such side notes, and none of them is sent back to the model. This module turns the
displayed history into engine messages, cuts it for Retry and Undo, and words errors for the tab
they happen in. It imports neither gradio nor the engine, so it is tested as plain data.
"""

from __future__ import annotations

from typing import Any

from inference.errors import ContextLengthError, EngineOverloadedError, ModelNotLoadedError
from inference.types import SamplingParams

Message = dict[str, Any]


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or Gradio 6's list of `{"type": "text"}` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", "")) if content.get("type", "text") == "text" else ""
    if isinstance(content, (list, tuple)):
        return "".join(content_text(part) for part in content)
    return ""


def is_side_note(message: Message) -> bool:
    """Reasoning, statistics and error notes carry a metadata title; the model never sees them."""
    metadata = message.get("metadata") or {}
    return bool(metadata.get("title"))


def to_engine_messages(history: list[Message], system_prompt: str = "") -> list[Message]:
    """OpenAI-style messages for the engine: the system prompt, then the user and assistant turns."""
    messages: list[Message] = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt.strip()})
    for message in history:
        if message.get("role") not in ("user", "assistant") or is_side_note(message):
            continue
        text = content_text(message.get("content"))
        if messages and messages[-1]["role"] == message["role"]:
            # Gradio may split one turn into several bubbles; the model sees one turn.
            messages[-1]["content"] += "\n\n" + text
        else:
            messages.append({"role": message["role"], "content": text})
    return messages


def last_user_index(history: list[Message]) -> int:
    """Index of the last user message, or -1."""
    for i in range(len(history) - 1, -1, -1):
        if history[i].get("role") == "user":
            return i
    return -1


def for_retry(history: list[Message]) -> list[Message]:
    """The history up to and including the last user message (its replies dropped)."""
    i = last_user_index(history)
    return list(history[: i + 1]) if i >= 0 else []


def for_undo(history: list[Message]) -> tuple[list[Message], str]:
    """The history before the last user message, and that message's text (back to the input box)."""
    i = last_user_index(history)
    if i < 0:
        return list(history), ""
    return list(history[:i]), content_text(history[i].get("content"))


def sampling_params(
    temperature: float, top_p: float, top_k: int, max_tokens: int, stop: list[str] | None = None
) -> SamplingParams:
    """Slider values as the engine's sampling parameters."""
    return SamplingParams(
        max_tokens=max(1, int(max_tokens)),
        temperature=float(temperature),
        top_p=float(top_p),
        top_k=int(top_k),
        stop=list(stop or []),
    )


# What to do about a prompt too long for the window, in the words of the tab it happened in.
TOO_LONG = {
    "chat": ("The conversation is too long for this model",
             "Start a new chat, clear this one or shorten the system prompt."),
    "completion": ("The prompt is too long for this model", "Shorten the prompt."),
}


def error_text(exc: BaseException, tab: str = "chat") -> str:
    """A readable sentence for an error, never a traceback; `tab` is "chat" or "completion"."""
    if isinstance(exc, ContextLengthError):
        count = f"at least {exc.prompt_tokens}" if exc.at_least else str(exc.prompt_tokens)
        what, advice = TOO_LONG[tab]
        return (
            f"{what}: the prompt has {count} tokens and the context window is "
            f"{exc.max_context}. {advice}"
        )
    if isinstance(exc, EngineOverloadedError):
        return "The server is busy right now: too many requests are waiting. Try again shortly."
    if isinstance(exc, ModelNotLoadedError):
        if exc.state == "error":
            return f"The model could not be loaded, so nothing can be generated. {exc}"
        return "The model is still loading. Try again in a moment."
    message = str(exc).strip() or type(exc).__name__
    return f"Generation failed: {message}"
