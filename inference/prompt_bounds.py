"""Tokenizing a prompt no further than the context window allows.

`encode_prompt()` returns a prompt's token ids when it leaves room for an output token, and refuses
it (`ContextLengthError`) as soon as it is known not to: the text is tokenized in slices of about
64 K characters, and once the slices so far reach the window the rest is never tokenized; the error
then says "at least N tokens". A 10 MiB prompt costs about the window's worth of tokenizing, not
2.5 M tokens, tens of seconds and a gigabyte of ids. A prompt that fits gets exactly the ids of one
call on the whole text.

The slices add up to the whole because they are cut only where Qwen's tokenizer always splits. It
normalizes to NFC, splits the text into pieces with a regex (`QWEN_PATTERN`) and runs byte-level BPE
inside each piece, never across pieces. A cut is made only where no piece of that regex and no NFC
composition can reach across, and no added token (`<|im_start|>`...) can straddle:

- before a space that follows a non-space: no alternative matches a non-space and then a space;
- after a newline followed by a non-space: a piece holding a newline goes on with whitespace only;
- after an ASCII digit: each digit is a piece of its own;
- between a CJK ideograph or kana and fullwidth ，。、！？；：, where a letter's piece always ends.

`profile()` checks once per tokenizer that it is of that kind (NFC, that regex, byte-level BPE,
added tokens without spaces, digits or non-ASCII); another tokenizer is called once on the whole
text, as before. A stretch without any cut for more than two slices (a megabyte of "aaaa") is first
bounded from below, by its bytes over the longest token's, and a run of ASCII letters by its length
over the longest all-letter token's; it is tokenized whole only when that bound still fits.

A lone surrogate (`"\\ud800"` in JSON) is no Unicode text and cannot be tokenized: it is an
`InvalidRequestError` naming the parameter, not a crash.
"""

from __future__ import annotations

import json
import math
import re
import threading
import unicodedata
import weakref
from dataclasses import dataclass
from typing import Any

from .errors import ContextLengthError, InvalidRequestError

SLICE_CHARS = 1 << 16

# Qwen2/Qwen3's pre-tokenizer (tokenizer.json); the cuts above are argued against exactly this.
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# The end of each match is a cut. Python's \S is narrower than the tokenizer's (Unicode White_Space
# is a subset of str.isspace), so a non-space here is a non-space there.
_CUT = re.compile(r"\S(?= )|\n(?=\S)|[0-9]"
                  r"|[\u4e00-\u9fff\u3041-\u3096\u30a1-\u30fa](?=[，。、！？；：])")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class TokenizerProfile:
    """What the lower bounds need: the longest token in bytes, and the longest of ASCII letters."""

    longest: int
    longest_letters: int

    def least_tokens(self, text: str) -> int:
        """A lower bound on the tokens of `text`, a stretch that starts and ends at cuts."""
        size = len(unicodedata.normalize("NFC", text).encode("utf-8"))
        by_bytes = math.ceil(size / self.longest)
        # A run of ASCII letters: every token inside it is all letters; at most one token at each
        # end reaches out of it, and NFC may fold its last letter into a following accent.
        margin = 2 * self.longest + 1
        runs = re.finditer(f"[A-Za-z]{{{margin + self.longest_letters},}}", text)
        by_letters = sum(math.ceil((len(run[0]) - margin) / self.longest_letters) for run in runs)
        return max(by_bytes, by_letters)


_profiles: weakref.WeakKeyDictionary[Any, TokenizerProfile | None] = weakref.WeakKeyDictionary()
_profiles_lock = threading.Lock()


def profile(tokenizer: Any) -> TokenizerProfile | None:
    """The tokenizer's profile when it splits as Qwen's does (so slices add up), else None."""
    with _profiles_lock:
        if tokenizer not in _profiles:
            _profiles[tokenizer] = _profile(tokenizer)
        return _profiles[tokenizer]


def _profile(tokenizer: Any) -> TokenizerProfile | None:
    try:
        return _qwen_profile(tokenizer)
    except (AttributeError, TypeError, ValueError):  # not a Hugging Face fast tokenizer
        return None


def _qwen_profile(tokenizer: Any) -> TokenizerProfile | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or type(backend.model).__name__ != "BPE":
        return None
    normalizer = json.loads(backend.normalizer.__getstate__()) if backend.normalizer else None
    pre_tokenizer = json.loads(backend.pre_tokenizer.__getstate__())
    expected = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN_PATTERN}, "behavior": "Isolated",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
    ]}
    if normalizer not in (None, {"type": "NFC"}) or pre_tokenizer != expected:
        return None
    added = list(tokenizer.added_tokens_decoder.values())
    for token in added:
        content = token.content
        if (not content.isascii() or any(c.isspace() or c.isdigit() for c in content)
                or token.lstrip or token.rstrip or token.single_word):
            return None
    vocab = backend.get_vocab(with_added_tokens=False)  # byte-level: one character per byte
    contents = [token.content for token in added]
    longest = max([len(k) for k in vocab] + [len(c) for c in contents])
    letters = [len(k) for k in [*vocab, *contents] if k.isascii() and k.isalpha()]
    return TokenizerProfile(longest, max(letters, default=1))


def surrogate_at(text: str) -> int | None:
    """Where `text` holds a lone surrogate (no Unicode text, no tokenizer takes it), if anywhere."""
    found = None if text.isascii() else _SURROGATE.search(text)
    return None if found is None else found.start()


def check_unicode(text: str, param: str, offset: int = 0) -> None:
    """`InvalidRequestError` naming `param` for a lone surrogate in `text`."""
    at = surrogate_at(text)
    if at is not None:
        raise InvalidRequestError(
            f"The {param} is not valid Unicode: it holds a lone surrogate ({ascii(text[at])}) at "
            f"character {offset + at}.", param)


def encode_prompt(tokenizer: Any, text: str, max_context: int, param: str = "prompt") -> list[int]:
    """The token ids of `text` (no special tokens added), when there are fewer than `max_context`.

    Otherwise `ContextLengthError`: with the exact count when all of the text was tokenized, or with
    `at_least` once the slices counted so far (or a lower bound) reach `max_context`.
    """
    bounds = profile(tokenizer)
    if bounds is None:
        check_unicode(text, param)
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) >= max_context:
            raise ContextLengthError(len(ids), max_context)
        return ids
    ids: list[int] = []
    start = 0
    while start < len(text):
        cut = _CUT.search(text, start + SLICE_CHARS) if len(text) - start > SLICE_CHARS else None
        end = cut.end() if cut else len(text)
        piece = text[start:end]
        check_unicode(piece, param, start)
        if end - start > 2 * SLICE_CHARS:  # no cut for long: bound it before tokenizing it whole
            least = len(ids) + bounds.least_tokens(piece)
            if least >= max_context:
                raise ContextLengthError(least, max_context, at_least=True)
        ids += tokenizer.encode(piece, add_special_tokens=False)
        start = end
        if len(ids) >= max_context:
            raise ContextLengthError(len(ids), max_context, at_least=start < len(text))
    return ids
