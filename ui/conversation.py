"""The playground's chat bookkeeping, as pure functions over Gradio's message dicts.

The Chatbot shows more than the conversation: a collapsed "Reasoning" block, a per-reply statistics
line and error notes. All three are messages with a `metadata.title`, Gradio's convention for such
side notes, and none of them is sent back to the model. This module turns the displayed history into
engine messages and an engine reply (text plus its final chunk) into displayed messages. It imports
neither gradio nor the engine, so it is tested as plain data.
"""

from __future__ import annotations

from typing import Any

from inference.errors import ContextLengthError, EngineOverloadedError, ModelNotLoadedError
from inference.types import SamplingParams, Timings, Usage

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
REASONING_TITLE = "Reasoning"

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


def split_reasoning(text: str, opened: bool = False) -> tuple[str | None, str, bool]:
    """Split a reply into (reasoning, answer, reasoning_done).

    `opened` says the prompt already ended with `<think>` (Qwen3 thinking models), so the reply
    starts inside the reasoning. Reasoning is None when the reply has none.
    """
    body = text
    if not opened:
        stripped = body.lstrip()
        if not stripped.startswith(THINK_OPEN):
            if THINK_CLOSE not in body:
                return None, text, True
            # A template that opened <think> itself: the reply starts with the reasoning.
        else:
            body = stripped[len(THINK_OPEN) :]
    if THINK_CLOSE in body:
        reasoning, answer = body.split(THINK_CLOSE, 1)
        return reasoning.strip(), answer.lstrip(), True
    return body.strip(), "", False


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


def format_stats(
    usage: Usage | None, timings: Timings | None, finish_reason: str | None
) -> tuple[str, str]:
    """A finished reply's statistics: a one-line summary (token counts, speed, why it ended)
    and the timing details shown when the line is expanded."""
    parts = []
    if usage is not None:
        word = "token" if usage.completion_tokens == 1 else "tokens"
        parts.append(f"{usage.prompt_tokens} prompt · {usage.completion_tokens} completion {word}")
    if timings is not None:
        parts.append(f"{timings.tokens_per_second:.1f} tok/s")
    if finish_reason:
        parts.append(f"finish: {finish_reason}")
    details = ""
    if timings is not None:
        details = (
            f"queue {timings.queue * 1000:.0f} ms · first token "
            f"{timings.time_to_first_token * 1000:.0f} ms · total {timings.total:.2f} s"
        )
    return " · ".join(parts), details


def error_text(exc: BaseException) -> str:
    """A readable sentence for an error, never a traceback."""
    if isinstance(exc, ContextLengthError):
        count = f"at least {exc.prompt_tokens}" if exc.at_least else str(exc.prompt_tokens)
        return (
            f"The conversation is too long for this model: the prompt has {count} "
            f"tokens and the context window is {exc.max_context}. Clear the chat or shorten "
            "the system prompt."
        )
    if isinstance(exc, EngineOverloadedError):
        return "The server is busy right now: too many requests are waiting. Try again shortly."
    if isinstance(exc, ModelNotLoadedError):
        if exc.state == "error":
            return f"The model could not be loaded, so nothing can be generated. {exc}"
        return "The model is still loading. Try again in a moment."
    message = str(exc).strip() or type(exc).__name__
    return f"Generation failed: {message}"


def reply_messages(
    text: str,
    *,
    opened_reasoning: bool = False,
    stats: tuple[str, str] | None = None,
    error: str | None = None,
) -> list[Message]:
    """The messages that display one assistant reply: reasoning, answer, statistics, error."""
    messages: list[Message] = []
    reasoning, answer, done = split_reasoning(text, opened_reasoning)
    if reasoning is not None:
        status = "done" if done or stats is not None or error is not None else "pending"
        messages.append(
            {
                "role": "assistant",
                "content": reasoning,
                "metadata": {"title": REASONING_TITLE, "status": status},
            }
        )
    if answer or (reasoning is None and error is None):
        messages.append({"role": "assistant", "content": answer})
    if error is not None:
        messages.append(
            {"role": "assistant", "content": error, "metadata": {"title": "⚠️ Error"}}
        )
    if stats is not None:
        summary, details = stats
        messages.append(
            {
                "role": "assistant",
                "content": details or summary,
                "metadata": {"title": summary, "status": "done"},
            }
        )
    return messages
