"""Token ids of rendered chat prompts' leading turns, kept for the next request that starts alike: a
shared system prompt (with its tools), or a chat re-sent with one more turn, is tokenized once.

A rendered prompt is cut only right after a special token (`<|im_end|>`...): the tokenizer takes
added tokens out of the text before anything else and tokenizes the pieces between them on their
own, so the ids of the part before a cut and of the part after it, put together, are the ids of
the whole. The cache is keyed by the text before a cut. On a miss, the prompt is tokenized in
three pieces (up to the first cut past `MIN_CHARS`, up to the last cut, the rest) and both prefixes
are kept; on a hit, only what follows the cached prefix is tokenized. The context window is
enforced as `encode_prompt` does, on the counts of all pieces together.
"""

from __future__ import annotations

import re
import threading
from array import array
from collections import OrderedDict
from typing import Any

from .errors import ContextLengthError
from .prompt_bounds import encode_prompt

MIN_CHARS = 2048  # shorter prefixes tokenize faster than the lookup saves
LOOKUPS = 4  # cut points tried from the end (each slices and hashes the prefix)
MAX_TOKENS = 1 << 21  # ids kept in all, about 8 MiB as int32


class PrefixTokenCache:
    def __init__(self, tokenizer: Any, max_tokens: int = MAX_TOKENS):
        self.tokenizer = tokenizer
        decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        # Special tokens matched on the raw text, taking no whitespace around them: the text on
        # either side of one is tokenized on its own.
        self.markers = sorted({t.content for t in decoder.values()
                               if t.content and getattr(t, "special", False)
                               and not any(getattr(t, flag, True) for flag in
                                           ("normalized", "lstrip", "rstrip", "single_word"))})
        # One pass over the text finds them all (longest first where one starts another).
        self._marker = re.compile("|".join(re.escape(m) for m in
                                           sorted(self.markers, key=len, reverse=True)))
        self._longest = max((len(m) for m in self.markers), default=0)
        self.max_tokens = max_tokens
        self._entries: OrderedDict[str, array] = OrderedDict()
        self._tokens = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def cuts(self, text: str) -> list[int]:
        """Where `text` may be cut: right after each special token, past MIN_CHARS, ascending."""
        if not self.markers:
            return []
        start = max(0, MIN_CHARS - self._longest)
        return [m.end() for m in self._marker.finditer(text, start) if m.end() >= MIN_CHARS]

    def encode(self, text: str, max_context: int, param: str) -> list[int]:
        """`encode_prompt(tokenizer, text, max_context, param)`, reusing a cached prefix."""
        cuts = self.cuts(text)
        if not cuts:
            return encode_prompt(self.tokenizer, text, max_context, param)
        ids, done = self._longest_cached(text, cuts)
        pieces = [c for c in (cuts[0], cuts[-1]) if c > done]
        for cut in sorted(set(pieces)) + [len(text)]:
            ids += self._encode_piece(text[done:cut], len(ids), max_context, param,
                                      more=cut < len(text))
            done = cut
            if cut < len(text):
                self._put(text[:cut], ids)
        return ids

    def _encode_piece(self, piece: str, before: int, max_context: int, param: str,
                      more: bool) -> list[int]:
        """The ids of `piece`, which follows `before` tokens (and precedes more text if `more`):
        refused as the whole prompt is, the count a lower bound unless all of it was counted."""
        if before >= max_context:
            raise ContextLengthError(before, max_context, at_least=True)
        try:
            return encode_prompt(self.tokenizer, piece, max_context - before, param)
        except ContextLengthError as exc:
            raise ContextLengthError(before + exc.prompt_tokens, max_context,
                                     at_least=exc.at_least or more) from None

    def _longest_cached(self, text: str, cuts: list[int]) -> tuple[list[int], int]:
        for cut in list(reversed(cuts[-LOOKUPS:])) + ([cuts[0]] if len(cuts) > LOOKUPS else []):
            with self._lock:
                found = self._entries.get(text[:cut])
                if found is not None:
                    self._entries.move_to_end(text[:cut])
                    self.hits += 1
                    return found.tolist(), cut
        with self._lock:
            self.misses += 1
        return [], 0

    def _put(self, prefix: str, ids: list[int]) -> None:
        if len(ids) > self.max_tokens // 4:
            return
        with self._lock:
            if prefix in self._entries:
                self._entries.move_to_end(prefix)
                return
            self._entries[prefix] = array("i", ids)
            self._tokens += len(ids)
            while self._tokens > self.max_tokens:
                _, dropped = self._entries.popitem(last=False)
                self._tokens -= len(dropped)
