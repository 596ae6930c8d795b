"""Reasoning: the text Qwen3 thinking models write inside `<think>...</think>`, split from the answer.

The one parser for both front ends: the API sends the reasoning as `reasoning_content`, the
playground shows it in a collapsible block, and neither puts it into the answer. Pure Python, no web
code, so `api/` and `ui/` both import it from here and always agree.

`ReasoningParser` works on a stream of text deltas and gives the same split however the text is
chunked, so streamed and non-streamed answers agree (non-streaming is one `feed()` and `finish()`).
Text that could be the start of a tag is held back until it is known not to be one. Whitespace right
inside the tags and right after `</think>` (Qwen3 writes `<think>\\n...\\n</think>\\n\\n`) is dropped.

Thinking-only models (Qwen3-*-Thinking-2507) have `<think>\\n` in their generation prompt and write
only the closing tag: start such a parser with `in_reasoning=True` (see `prompt_opens_reasoning`).
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_START = "<think>"
THINK_END = "</think>"


def partial_tag_length(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is the beginning (not the whole) of one of `tags`.
    Such an end starts with the tag's first character: only those places in the last
    len(tag) - 1 characters are tried (called on every streamed chunk, most have none)."""
    longest = 0
    for tag in tags:
        window = text[max(0, len(text) - len(tag) + 1):] if len(tag) > 1 else ""
        start = window.find(tag[0])
        while start >= 0 and len(window) - start > longest:
            if tag.startswith(window[start:]):
                longest = len(window) - start
                break
            start = window.find(tag[0], start + 1)
    return longest


def trailing_space_start(text: str, end: int) -> int:
    """Index where the run of whitespace that ends at `end` begins."""
    while end > 0 and text[end - 1].isspace():
        end -= 1
    return end


def prompt_opens_reasoning(prompt: str) -> bool:
    """Whether a rendered prompt leaves the model inside `<think>` (thinking-only templates)."""
    tail = prompt.rstrip()
    return tail.endswith(THINK_START)


@dataclass
class ReasoningDelta:
    reasoning: str = ""
    content: str = ""

    def __iadd__(self, other: ReasoningDelta) -> ReasoningDelta:
        self.reasoning += other.reasoning
        self.content += other.content
        return self


class ReasoningParser:
    """Splits a stream of text into reasoning and content at `<think>` / `</think>`."""

    def __init__(self, *, in_reasoning: bool = False):
        self._in_reasoning = in_reasoning
        self._strip_leading = in_reasoning
        self._buffer = ""

    @property
    def in_reasoning(self) -> bool:
        """Whether the text so far ends inside `<think>` (an unclosed block is still reasoning)."""
        return self._in_reasoning

    def feed(self, text: str) -> ReasoningDelta:
        self._buffer += text
        return self._drain(final=False)

    def finish(self) -> ReasoningDelta:
        """The held-back rest, at the end of generation (an unclosed `<think>` stays reasoning)."""
        return self._drain(final=True)

    def _emit(self, out: ReasoningDelta, text: str) -> None:
        if self._strip_leading:
            text = text.lstrip()
            if not text:
                return
            self._strip_leading = False
        if self._in_reasoning:
            out.reasoning += text
        else:
            out.content += text

    def _drain(self, *, final: bool) -> ReasoningDelta:
        out = ReasoningDelta()
        while True:
            # In content, a stray `</think>` is markup too: dropped, never shown. Both tags begin
            # with "<": a buffer without one holds neither.
            tags = (THINK_END,) if self._in_reasoning else (THINK_START, THINK_END)
            found = [(i, tag) for tag in tags if (i := self._buffer.find(tag)) >= 0] \
                if "<" in self._buffer else []
            if found:
                index, tag = min(found)
                before = self._buffer[:index]
                self._emit(out, before.rstrip() if self._in_reasoning else before)
                self._buffer = self._buffer[index + len(tag) :]
                self._in_reasoning = tag == THINK_START
                self._strip_leading = True
                continue
            if final:
                rest = self._buffer.rstrip() if self._in_reasoning else self._buffer
                self._emit(out, rest)
                self._buffer = ""
                return out
            keep = len(self._buffer) - partial_tag_length(self._buffer, tags)
            if self._in_reasoning:  # whitespace before `</think>` is dropped: hold it
                keep = trailing_space_start(self._buffer, keep)
            self._emit(out, self._buffer[:keep])
            self._buffer = self._buffer[keep:]
            return out
