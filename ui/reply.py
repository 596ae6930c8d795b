"""One assistant reply as the Chatbot shows it while it streams and once it has ended.

`Reply` is fed the engine's chunks. It splits `<think>` with the same parser as the API
(`inference.reasoning`), so the playground and `reasoning_content` always agree, and counts tokens
for the live speed readout. `messages()` gives the displayed messages: a collapsible "Reasoning"
block, the answer, then one side note: the live readout while streaming, the statistics line once
ended (a stopped reply says so in it), or an error. Side notes carry a `metadata.title` (Gradio's
"thought" messages) and are never sent back to the model. No gradio import: tested as plain data.
"""

from __future__ import annotations

import time
from typing import Any

from inference.reasoning import ReasoningParser
from inference.types import GenerationChunk, Timings, Usage

REASONING_TITLE = "Reasoning"
ERROR_TITLE = "⚠️ Error"
STOPPED = "■ Stopped"  # U+25A0: in every system font, unlike the emoji ⏹
LIVE_PREFIX = "Generating"
# The generation prompt shown in the statistics: from the last chat-markup turn header on.
TURN_HEADER = "<|im_start|>"

Message = dict[str, Any]


def format_stats(
    usage: Usage | None, timings: Timings | None, finish_reason: str | None
) -> tuple[str, str]:
    """A finished reply's statistics: a one-line summary (token counts, speed, why it ended)
    and the timing details shown when the line is expanded."""
    parts = []
    if finish_reason == "cancelled":
        parts.append(STOPPED)
    if usage is not None:
        word = "token" if usage.completion_tokens == 1 else "tokens"
        parts.append(f"{usage.prompt_tokens} prompt · {usage.completion_tokens} completion {word}")
    if timings is not None:
        parts.append(f"{timings.tokens_per_second:.1f} tok/s")
    if finish_reason and finish_reason != "cancelled":
        parts.append(f"finish: {finish_reason}")
    details = ""
    if timings is not None:
        details = (
            f"queue {timings.queue * 1000:.0f} ms · first token "
            f"{timings.time_to_first_token * 1000:.0f} ms · total {timings.total:.2f} s"
        )
    return " · ".join(parts), details


def generation_prompt(prompt_text: str | None) -> str:
    """The end of a rendered chat prompt that the reply continues: the assistant's turn header
    and whatever the template put after it (`<think>\\n`, or an empty think block)."""
    if not prompt_text:
        return ""
    start = prompt_text.rfind(TURN_HEADER)
    return prompt_text[start:] if start >= 0 else prompt_text[-40:]


def live_speed(tokens: int, first_token_at: float | None, now: float) -> str:
    """The readout while a reply streams: tokens so far and decode speed since the first token
    (the engine's own definition, so the final statistics line continues it)."""
    word = "token" if tokens == 1 else "tokens"
    elapsed = now - first_token_at if first_token_at is not None else 0.0
    rate = (tokens - 1) / elapsed if tokens > 1 and elapsed > 0 else 0.0
    return f"{LIVE_PREFIX} · {tokens} {word} · {rate:.1f} tok/s"


class Reply:
    """One streamed reply: reasoning and answer split as they come, plus how it ended."""

    def __init__(self, prompt_text: str | None = None, *, opens_reasoning: bool = False,
                 clock=time.perf_counter):
        self._parser = ReasoningParser(in_reasoning=opens_reasoning)
        self._clock = clock
        self.reasoning = ""
        self.answer = ""
        self.tokens = 0
        self.first_token_at: float | None = None
        self.prompt_tail = generation_prompt(prompt_text)
        self.stats: tuple[str, str] | None = None
        self.error: str | None = None

    @property
    def ended(self) -> bool:
        return self.stats is not None or self.error is not None

    @property
    def chars(self) -> int:
        """How much text the page renders for this reply."""
        return len(self.reasoning) + len(self.answer)

    def feed(self, chunk: GenerationChunk) -> None:
        """Add a chunk's text and tokens; a final chunk ends the reply with its statistics."""
        if chunk.token_ids:
            self.tokens += len(chunk.token_ids)
            if self.first_token_at is None:
                self.first_token_at = self._clock()
        split = self._parser.feed(chunk.text)
        if chunk.finish_reason is not None:
            split += self._parser.finish()
        self.reasoning += split.reasoning
        self.answer += split.content
        if chunk.finish_reason is None:
            return
        if chunk.finish_reason == "error":
            self.error = f"Generation failed: {chunk.error or 'unknown error'}"
        summary, details = format_stats(chunk.usage, chunk.timings, chunk.finish_reason)
        if self.prompt_tail:
            details += f"  \nreply continues `{self.prompt_tail.encode('unicode_escape').decode()}`"
        self.stats = (summary, details)

    def fail(self, error: str) -> None:
        """End the reply with an error note (a failed submit or a broken stream)."""
        self._flush()
        self.error = error

    def _flush(self) -> None:
        rest = self._parser.finish()
        self.reasoning += rest.reasoning
        self.answer += rest.content

    def messages(self) -> list[Message]:
        """The displayed messages of the reply as it stands."""
        messages: list[Message] = []
        reasoning = self.reasoning.strip()
        if reasoning:
            pending = self._parser.in_reasoning and not self.ended
            messages.append({"role": "assistant", "content": reasoning,
                             "metadata": {"title": REASONING_TITLE,
                                          "status": "pending" if pending else "done"}})
        if self.answer or not (reasoning or self.error):
            messages.append({"role": "assistant", "content": self.answer})
        if self.error is not None:
            messages.append({"role": "assistant", "content": self.error,
                             "metadata": {"title": ERROR_TITLE}})
        if self.stats is not None:
            summary, details = self.stats
            messages.append({"role": "assistant", "content": details or summary,
                             "metadata": {"title": summary, "status": "done"}})
        elif self.error is None:
            live = live_speed(self.tokens, self.first_token_at, self._clock())
            # "done": created closed, so the statistics line that replaces it stays closed too.
            messages.append({"role": "assistant", "content": "",
                             "metadata": {"title": live, "status": "done"}})
        return messages
