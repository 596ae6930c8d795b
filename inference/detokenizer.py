"""Turning a growing list of token ids into text deltas that are safe to stream.

`IncrementalDetokenizer` only releases whole UTF-8 characters: a character whose bytes are split
across tokens is held until its last byte arrives. `StopStringMatcher` holds back any tail that could
still become a stop string, so a stop string never leaks into the output, even across tokens.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


def plain_backend(tokenizer):
    """The Rust tokenizer behind a transformers tokenizer whose `decode` is that tokenizer's and
    nothing more (the stock one, no clean-up of spaces), else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", True):
        return None
    try:
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # another transformers layout: keep its decode
        return None
    kind = type(tokenizer)
    stock = (kind.decode is PreTrainedTokenizerBase.decode
             and getattr(kind, "_decode", None) is TokenizersBackend._decode)
    return backend if stock else None


class IncrementalDetokenizer:
    """The prefix/read-offset scheme used by TGI and vLLM: decode a small window each step."""

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        # The Rust tokenizer itself when transformers' wrapper would add nothing: a third of the
        # time per token, twice per token, for every running stream.
        self._backend = plain_backend(tokenizer)

    def _decode(self, ids: list[int]) -> str:
        if self._backend is not None:
            return self._backend.decode(ids, skip_special_tokens=self.skip_special_tokens)
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add(self, token_id: int) -> str:
        """Append one token; return the text it completes (possibly empty)."""
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self.prefix_offset:self.read_offset])
        new_text = self._decode(self.ids[self.prefix_offset:])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT):
            delta = new_text[len(prefix_text):]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return delta
        return ""

    def flush(self) -> str:
        """At the end: whatever is still held (an incomplete character shows as U+FFFD)."""
        prefix_text = self._decode(self.ids[self.prefix_offset:self.read_offset])
        new_text = self._decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return new_text[len(prefix_text):] if len(new_text) > len(prefix_text) else ""


class StopStringMatcher:
    """Finds stop strings in streamed text and withholds text that may be the start of one."""

    def __init__(self, stop: list[str]):
        self.stop = [s for s in stop if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> tuple[str, bool]:
        """Add new text; return (text safe to emit now, whether a stop string was hit)."""
        if self.stopped:
            return "", True
        if not self.stop:
            return text, False
        self.pending += text
        hits = [(self.pending.find(s), s) for s in self.stop]
        hits = [(i, s) for i, s in hits if i >= 0]
        if hits:
            index = min(i for i, _ in hits)
            emit, self.pending, self.stopped = self.pending[:index], "", True
            return emit, True
        hold = self._held_suffix_length()
        cut = len(self.pending) - hold
        emit, self.pending = self.pending[:cut], self.pending[cut:]
        return emit, False

    def _held_suffix_length(self) -> int:
        """Length of the longest tail of `pending` that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stop:
            for k in range(min(len(stop) - 1, len(self.pending)), best, -1):
                if self.pending.endswith(stop[:k]):
                    best = k
                    break
        return best

    def flush(self) -> str:
        emit, self.pending = self.pending, ""
        return "" if self.stopped else emit
