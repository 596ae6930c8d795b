"""Streaming text: whole UTF-8 characters only, and stop strings that never leak."""

from __future__ import annotations

import copy
import random

import pytest

from inference.detokenizer import IncrementalDetokenizer, StopStringMatcher


def stream(tokenizer, ids):
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.add(i) for i in ids]
    return deltas, detok.flush()


@pytest.mark.parametrize("text", ["🫠 melt", "x🦜y𝄞z", "日本語のテキスト", "naïve café", "a👩‍👩‍👧b"])
def test_multibyte_characters_arrive_whole(builtin_tokenizer, text):
    ids = builtin_tokenizer.encode(text)
    deltas, tail = stream(builtin_tokenizer, ids)
    assert "".join(deltas) + tail == text
    assert all("\ufffd" not in d for d in deltas)


def test_emoji_split_bytes_are_held(builtin_tokenizer):
    ids = builtin_tokenizer.encode("🫠")
    assert len(ids) == 3  # one emoji, three byte-level tokens
    deltas, tail = stream(builtin_tokenizer, ids)
    assert deltas == ["", "", "🫠"] and tail == ""


def test_stop_string_across_chunks_never_leaks():
    matcher = StopStringMatcher(["STOP"])
    out = []
    for piece in ["abc S", "T", "O", "P tail"]:
        text, hit = matcher.feed(piece)
        out.append(text)
        if hit:
            break
    assert "".join(out) == "abc " and hit


def test_false_start_is_released():
    matcher = StopStringMatcher(["STOP"])
    a, _ = matcher.feed("xST")
    b, _ = matcher.feed("AR")
    assert a == "x" and b == "STAR"
    assert matcher.flush() == ""


def test_earliest_of_several_stops():
    matcher = StopStringMatcher(["world", "lo w"])
    text, hit = matcher.feed("hello world")
    assert hit and text == "hel"


def test_flush_releases_held_prefix_at_end():
    matcher = StopStringMatcher(["\n\n"])
    text, hit = matcher.feed("line\n")
    assert text == "line" and not hit
    assert matcher.flush() == "\n"


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_streamed_text_is_what_the_tokenizer_decodes(builtin_tokenizer, skip_special_tokens):
    rng = random.Random(4)
    ids = [rng.randrange(len(builtin_tokenizer)) for _ in range(400)]
    ids[10:10] = builtin_tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    detok = IncrementalDetokenizer(builtin_tokenizer, skip_special_tokens)
    assert detok._backend is not None  # Qwen's tokenizer cleans up no spaces: the Rust one decodes
    text = "".join(detok.add(i) for i in ids) + detok.flush()
    assert text == builtin_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def test_a_tokenizer_with_its_own_decoding_keeps_it(builtin_tokenizer):
    cleaning_up = copy.copy(builtin_tokenizer)  # what its wrapper adds must not be skipped
    cleaning_up.clean_up_tokenization_spaces = True
    assert IncrementalDetokenizer(cleaning_up)._backend is None

    class Overriding(type(builtin_tokenizer)):  # as Whisper's tokenizer does
        def _decode(self, token_ids, **kwargs):
            return "own" * len(token_ids)

    overriding = copy.copy(builtin_tokenizer)
    overriding.__class__ = Overriding
    detok = IncrementalDetokenizer(overriding)
    assert detok._backend is None and detok.add(5) == "own"
