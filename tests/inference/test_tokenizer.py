"""Qwen3's tokenizer, built offline: known ids, specials and lossless round trips."""

from __future__ import annotations

import pytest

from inference.builtin.tokenizer import ADDED_TOKENS, FIRST_ADDED_ID

SAMPLES = [
    "Hello world",
    "Grüße aus München, ça va? Ñandú.",
    "你好，世界！今天天气很好。",
    "こんにちは世界、カタカナとひらがな",
    "Привет, мир! Ελληνικά. العربية. עברית. हिन्दी",
    "emoji: 🎉🚀👩‍👩‍👧‍👦🇫🇷 and ❤️",
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}\n\n\tprint(f(3))  # done\r\n",
    "numbers 1234567890 3.14159 -42 1e-9",
    "   leading and trailing spaces   ",
    "e\u0301 (decomposed é)",
]


def test_known_ids_match_qwen(builtin_tokenizer):
    # Ids as Qwen's published tokenizer gives them.
    assert builtin_tokenizer.encode("Hello world") == [9707, 1879]
    assert builtin_tokenizer.encode("123") == [16, 17, 18]  # digits split one by one


def test_added_tokens_in_order(builtin_tokenizer):
    assert len(ADDED_TOKENS) == 26
    for offset, (content, _) in enumerate(ADDED_TOKENS):
        assert builtin_tokenizer.convert_tokens_to_ids(content) == FIRST_ADDED_ID + offset
    assert builtin_tokenizer.convert_tokens_to_ids("<tool_call>") == 151657
    assert builtin_tokenizer.convert_tokens_to_ids("</think>") == 151668
    assert builtin_tokenizer.eos_token_id == 151645
    assert builtin_tokenizer.pad_token_id == 151643
    assert len(builtin_tokenizer) == 151669


def test_specials_are_single_tokens(builtin_tokenizer):
    text = "<|im_start|>user\nhi<|im_end|>\n<tool_call>\n{}\n</tool_call><think></think>"
    ids = builtin_tokenizer.encode(text)
    for special in (151644, 151645, 151657, 151658, 151667, 151668):
        assert special in ids
    assert builtin_tokenizer.decode(ids) == text


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip(builtin_tokenizer, text):
    import unicodedata

    ids = builtin_tokenizer.encode(text)
    assert builtin_tokenizer.decode(ids) == unicodedata.normalize("NFC", text)


def test_skip_special_tokens_keeps_tool_markup(builtin_tokenizer):
    ids = builtin_tokenizer.encode("<|im_start|>a<tool_call>b<|im_end|>")
    assert builtin_tokenizer.decode(ids, skip_special_tokens=True) == "a<tool_call>b"
