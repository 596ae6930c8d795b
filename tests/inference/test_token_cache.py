"""The prefix token cache: a rendered chat prompt cut after special tokens tokenizes to exactly
what the whole does, hit or miss; a shared system prompt or an earlier turn is tokenized once; the
context window is enforced on the whole."""

from __future__ import annotations

import random

import pytest

import inference.token_cache as token_cache
from inference.chat import render_chat
from inference.errors import ContextLengthError
from inference.token_cache import MIN_CHARS, PrefixTokenCache

PIECES = ["hello", " world", "  two  spaces", "\n", "\n\n", "123", "4.5", "日本語", "🫠", "naïve",
          "<tag>", " - ", "don't", "\t", "x" * 30, " \n "]


def text(seed: int, chars: int) -> str:
    rng = random.Random(seed)
    out = []
    while sum(map(len, out)) < chars:
        out.append(rng.choice(PIECES))
    return "".join(out)


def chat(system: str, turns: int, seed: int) -> list[dict]:
    messages = [{"role": "system", "content": system}]
    for i in range(turns):
        messages.append({"role": "user", "content": text(seed + i, 300)})
        messages.append({"role": "assistant", "content": text(seed + 100 + i, 200)})
    messages.append({"role": "user", "content": text(seed + 999, 80)})
    return messages


def rendered(tokenizer, messages) -> str:
    return render_chat(tokenizer, messages, None, None, "", False)


@pytest.mark.parametrize("seed", range(4))
def test_cut_prompts_tokenize_as_the_whole_hit_or_miss(builtin_tokenizer, seed):
    cache = PrefixTokenCache(builtin_tokenizer)
    assert "<|im_end|>" in cache.markers
    system = text(seed, MIN_CHARS + 500)
    prompts = [rendered(builtin_tokenizer, chat(system, turns, seed)) for turns in (0, 2, 3)]
    prompts.append(rendered(builtin_tokenizer, chat(system, 1, seed + 7)))  # another user
    for prompt in prompts + prompts:
        expected = builtin_tokenizer.encode(prompt, add_special_tokens=False)
        assert cache.encode(prompt, 100_000, "messages") == expected
    assert cache.hits >= len(prompts)


def test_a_shared_system_prompt_is_tokenized_once(builtin_tokenizer, monkeypatch):
    cache = PrefixTokenCache(builtin_tokenizer)
    system = text(11, 4 * MIN_CHARS)
    first = rendered(builtin_tokenizer, chat(system, 0, 1))
    cache.encode(first, 100_000, "messages")
    pieces = []
    real = token_cache.encode_prompt
    monkeypatch.setattr(token_cache, "encode_prompt",
                        lambda tok, piece, *args: pieces.append(piece) or real(tok, piece, *args))
    second = rendered(builtin_tokenizer, chat(system, 0, 2))
    ids = cache.encode(second, 100_000, "messages")
    assert ids == builtin_tokenizer.encode(second, add_special_tokens=False)
    assert system not in "".join(pieces) and sum(map(len, pieces)) < len(second) - len(system)


def test_the_window_counts_every_piece(builtin_tokenizer):
    cache = PrefixTokenCache(builtin_tokenizer)
    prompt = rendered(builtin_tokenizer, chat(text(5, 3 * MIN_CHARS), 2, 5))
    total = len(builtin_tokenizer.encode(prompt, add_special_tokens=False))
    for window in (total, total // 2, 10):
        with pytest.raises(ContextLengthError) as caught:
            cache.encode(prompt, window, "messages")
        assert caught.value.max_context == window
        assert caught.value.prompt_tokens >= window
        if caught.value.at_least is False:
            assert caught.value.prompt_tokens == total
    assert cache.encode(prompt, total + 1, "messages") == builtin_tokenizer.encode(
        prompt, add_special_tokens=False)


def test_a_prefix_over_the_window_is_counted_as_a_lower_bound(builtin_tokenizer):
    cache = PrefixTokenCache(builtin_tokenizer)
    system = text(8, MIN_CHARS + 200)
    prompt = rendered(builtin_tokenizer, chat(system, 3, 8))
    first = len(builtin_tokenizer.encode(prompt[:cache.cuts(prompt)[0]], add_special_tokens=False))
    with pytest.raises(ContextLengthError) as caught:
        cache.encode(prompt, first - 5, "messages")  # the first piece alone is over
    assert caught.value.at_least and caught.value.prompt_tokens >= first - 5


def test_the_cache_keeps_a_bounded_number_of_tokens(builtin_tokenizer):
    cache = PrefixTokenCache(builtin_tokenizer, max_tokens=8_000)
    for seed in range(12):
        cache.encode(rendered(builtin_tokenizer, chat(text(seed, MIN_CHARS + 800), 1, seed)),
                     100_000, "messages")
    assert 0 < cache._tokens <= 8_000
    assert len(cache._entries) < 24  # two prefixes a prompt, the oldest dropped


def test_short_prompts_and_plain_text_go_straight_through(builtin_tokenizer):
    cache = PrefixTokenCache(builtin_tokenizer)
    short = rendered(builtin_tokenizer, [{"role": "user", "content": "hi"}])
    assert cache.cuts(short) == []
    assert cache.encode(short, 1000, "messages") == builtin_tokenizer.encode(
        short, add_special_tokens=False)
    assert cache.hits == cache.misses == 0
