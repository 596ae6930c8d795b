"""Bounded work per prompt: a prompt is tokenized only as far as the window, in slices whose ids
are exactly those of one call; a prompt that cannot fit is refused with "at least N tokens"; a lone
surrogate and `max_tokens` beyond the window are invalid requests (the API and the playground alike
go through the engine). The built-in model's tokenizer is Qwen3's real one."""

from __future__ import annotations

import random

import pytest

from inference import prompt_bounds
from inference.chat import render_chat, trim_starts, trim_to_fit
from inference.errors import ContextLengthError, InvalidRequestError
from inference.prompt_bounds import encode_prompt
from inference.types import GenerationRequest, SamplingParams

TEXTS = [
    "Hello world, it's a test. Don't stop: 1234567890 3.14159 -42 1e-9!\n\nNext paragraph.",
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}\n\n\tprint(f(3))  # done\r\n  \n",
    "你好，世界！今天天气很好。我们去公园吧、好吗？こんにちは世界、カタカナとひらがな。",
    "Привет, мир! Ελληνικά. العربية. עברית. हिन्दी क़ ख़ e\u0301 A\u030a \u1100\u1161\u11a8",
    "emoji: 🎉🚀👩‍👩‍👧‍👦🇫🇷 and ❤️ — “quotes” «guillemets» …\u00a0nbsp\u3000ideographic\u2028ls",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nOK",
    "   leading and trailing spaces   \n\n\n   ",
    "a" * 3000 + " " + "b" * 3000 + "1" * 500 + "-" * 700 + " " * 900 + "\n" * 50 + "x",
]
# Characters that stress the cuts: every whitespace kind, combining marks, digits, contractions,
# CJK with its punctuation, decompositions NFC changes, specials.
ALPHABET = list("aZ ' s t 9 0 . , ! - \n \r \t") + [
    "\u00a0", "\u3000", "\u0085", "\u2028", "\u0301", "\u0308", "\u093c", "\u0958", "\u1100",
    "\u1161", "\u11a8", "中", "文", "，", "。", "、", "か", "\u3099", "ア", "é", "ß", "Ω", "\u2126",
    "🎉", "\u200b", "'s", "'LL", "<|im_end|>", "<think>", "  ", "\n\n", "12", "١٢", "Ⅻ",
]
# Unicode's White_Space property: the tokenizer's \s. Each must be whitespace to Python too, so
# that the cuts' non-space (Python's \S) is a non-space to the tokenizer.
WHITE_SPACE = [*range(0x9, 0xE), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
               0x202F, 0x205F, 0x3000]


def one_call(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


@pytest.fixture
def small_slices(monkeypatch):
    """Slices of a few characters: a cut at nearly every place the rules allow."""
    monkeypatch.setattr(prompt_bounds, "SLICE_CHARS", 3)


def test_the_builtin_tokenizer_is_sliced(builtin_tokenizer):
    profile = prompt_bounds.profile(builtin_tokenizer)
    assert profile is not None and profile.longest == 128 and profile.longest_letters == 36


def test_white_space_is_whitespace_to_python():
    assert all(chr(c).isspace() for c in WHITE_SPACE)


@pytest.mark.parametrize("text", TEXTS)
def test_slices_give_the_ids_of_one_call(builtin_tokenizer, small_slices, text):
    assert encode_prompt(builtin_tokenizer, text, 10**9) == one_call(builtin_tokenizer, text)


def test_slices_give_the_ids_of_one_call_on_random_text(builtin_tokenizer, small_slices):
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choices(ALPHABET, k=rng.randint(1, 120)))
        assert encode_prompt(builtin_tokenizer, text, 10**9) == one_call(builtin_tokenizer, text), text


def test_a_rendered_chat_is_sliced_exactly(builtin_tokenizer, small_slices):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": TEXTS[0] + TEXTS[2]},
                {"role": "assistant", "content": TEXTS[1]},
                {"role": "user", "content": TEXTS[3]}]
    text = render_chat(builtin_tokenizer, messages)
    assert encode_prompt(builtin_tokenizer, text, 10**9) == one_call(builtin_tokenizer, text)


def test_a_prompt_that_fits_has_its_exact_count(builtin_tokenizer):
    text = TEXTS[0] * 2000  # several default slices
    ids = one_call(builtin_tokenizer, text)
    assert encode_prompt(builtin_tokenizer, text, len(ids) + 1) == ids
    with pytest.raises(ContextLengthError) as info:  # all of it counted: exact, not "at least"
        encode_prompt(builtin_tokenizer, text, len(ids))
    assert info.value.prompt_tokens == len(ids) and not info.value.at_least
    assert f"has {len(ids)} tokens" in str(info.value)


def test_a_prompt_far_over_the_window_is_refused_part_way(builtin_tokenizer, monkeypatch):
    tokenized = []
    encode = builtin_tokenizer.encode
    monkeypatch.setattr(builtin_tokenizer, "encode",
                        lambda text, **kw: tokenized.append(len(text)) or encode(text, **kw))
    text = "The quick brown fox jumps over the lazy dog. " * 200_000  # 9 MB, 2 M tokens
    with pytest.raises(ContextLengthError) as info:
        encode_prompt(builtin_tokenizer, text, 4096)
    error = info.value
    assert error.at_least and error.max_context == 4096
    assert 4096 <= error.prompt_tokens < 4096 + 20_000  # one slice past the window at most
    assert f"at least {error.prompt_tokens} tokens" in str(error)
    assert sum(tokenized) <= 2 * prompt_bounds.SLICE_CHARS + 100  # not the 9 MB


@pytest.mark.parametrize("text", ["a" * 3_000_000, "x" + "ab" * 1_500_000])
def test_a_stretch_without_cuts_is_bounded_before_it_is_tokenized(builtin_tokenizer, text,
                                                                   monkeypatch):
    least = prompt_bounds.profile(builtin_tokenizer).least_tokens(text)
    tokenized = []
    encode = builtin_tokenizer.encode
    monkeypatch.setattr(builtin_tokenizer, "encode",
                        lambda text, **kw: tokenized.append(len(text)) or encode(text, **kw))
    with pytest.raises(ContextLengthError) as info:
        encode_prompt(builtin_tokenizer, text, least)
    assert tokenized == []  # refused on the bound, never tokenized
    assert info.value.at_least and info.value.prompt_tokens == least


@pytest.mark.parametrize("text", [TEXTS[7] * 40, "a" * 200_000, "-" * 100_000, " " * 50_000,
                                  "中" * 50_000, "a\u0301" * 50_000])
def test_the_lower_bound_is_one(builtin_tokenizer, text):
    bound = prompt_bounds.profile(builtin_tokenizer).least_tokens(text)
    assert 0 < bound <= len(one_call(builtin_tokenizer, text))


def test_a_stretch_without_cuts_that_fits_is_exact(builtin_tokenizer, monkeypatch):
    monkeypatch.setattr(prompt_bounds, "SLICE_CHARS", 1000)
    text = "hello world " * 100 + "a" * 5000 + " bye"
    assert encode_prompt(builtin_tokenizer, text, 10**9) == one_call(builtin_tokenizer, text)


def test_another_tokenizer_is_used_in_one_call(builtin_tokenizer):
    class Whole:
        def encode(self, text, add_special_tokens=False):
            return list(range(len(text)))

    assert prompt_bounds.profile(Whole()) is None
    assert encode_prompt(Whole(), "abc", 10) == [0, 1, 2]
    with pytest.raises(ContextLengthError) as info:
        encode_prompt(Whole(), "x" * 20, 10)
    assert info.value.prompt_tokens == 20 and not info.value.at_least


def test_a_lone_surrogate_is_an_invalid_request(builtin_tokenizer):
    with pytest.raises(InvalidRequestError) as info:
        encode_prompt(builtin_tokenizer, "ok a\ud800", 100, "prompt")
    assert info.value.param == "prompt" and "\\ud800" in str(info.value)
    str(info.value).encode("utf-8")  # the message itself is sendable
    with pytest.raises(InvalidRequestError) as info:
        render_chat(builtin_tokenizer, [{"role": "user", "content": "hi"},
                                        {"role": "user", "content": [{"type": "text",
                                                                      "text": "a\udfff"}]}])
    assert info.value.param == "messages" and "messages[1].content[0].text" in str(info.value)
    with pytest.raises(InvalidRequestError) as info:
        render_chat(builtin_tokenizer, [{"role": "user", "content": "hi"}],
                    tools=[{"type": "function", "function": {"name": "f", "parameters": {
                        "type": "object", "properties": {"k\udc00": {"type": "string"}}}}}])
    assert info.value.param == "tools"
    str(info.value).encode("utf-8")


# -- trimming the chat history ----------------------------------------------------------------

def linear_trim(tokenizer, messages, max_context):
    """The policy as it was, one turn at a time, counting every try in full."""
    kept = list(messages)
    while True:
        text = render_chat(tokenizer, kept)
        ids = one_call(tokenizer, text)
        droppable = [i for i, m in enumerate(kept[:-1]) if m.get("role") != "system"]
        if len(ids) < max_context or not droppable:
            return kept, ids
        first = droppable[0]
        del kept[first]
        while first < len(kept) - 1 and kept[first].get("role") == "tool":
            del kept[first]


def history(turns: int):
    messages = [{"role": "system", "content": "Sys."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"question {i} " * (1 + i % 4)})
        if i % 3 == 1:
            messages.append({"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "f", "arguments": "{}"}}]})
            messages.append({"role": "tool", "content": "result " * 3})
            messages.append({"role": "tool", "content": "more"})
        messages.append({"role": "assistant", "content": f"answer {i} " * 2})
        if i == 4:
            messages.append({"role": "system", "content": "A system note in between."})
    messages.append({"role": "user", "content": "last"})
    return messages


def test_trim_starts_follow_the_policy():
    messages = [{"role": "system"}, {"role": "user"}, {"role": "assistant"}, {"role": "tool"},
                {"role": "system"}, {"role": "user"}, {"role": "user"}]
    assert trim_starts(messages) == [0, 2, 4, 6]
    assert trim_starts([{"role": "user"}]) == [0]


@pytest.mark.parametrize("max_context", [60, 120, 200, 350, 10_000])
def test_trimming_drops_as_few_turns_as_the_one_by_one_policy(builtin_tokenizer, max_context):
    messages = history(12)
    expected, ids = linear_trim(builtin_tokenizer, messages, max_context)
    if len(ids) >= max_context:
        with pytest.raises(ContextLengthError):
            trim_to_fit(builtin_tokenizer, messages, max_context)
        return
    kept, got, text = trim_to_fit(builtin_tokenizer, messages, max_context)
    assert kept == expected and got == ids and len(got) < max_context
    assert text == render_chat(builtin_tokenizer, kept)


def test_trimming_a_huge_last_message_is_refused_part_way(builtin_tokenizer, monkeypatch):
    messages = [{"role": "user", "content": "old " * 10},
                {"role": "user", "content": "The quick brown fox. " * 300_000}]  # 6.3 MB
    tokenized = []
    encode = builtin_tokenizer.encode
    monkeypatch.setattr(builtin_tokenizer, "encode",
                        lambda text, **kw: tokenized.append(len(text)) or encode(text, **kw))
    with pytest.raises(ContextLengthError) as info:
        trim_to_fit(builtin_tokenizer, messages, 4096)
    assert info.value.at_least
    assert max(tokenized) <= 2 * prompt_bounds.SLICE_CHARS + 100  # never the whole message


# -- the engine: what the API and the playground both call --------------------------------------

async def test_max_tokens_beyond_the_window_is_an_invalid_request(builtin_engine):
    window = builtin_engine.max_context
    for max_tokens in (window + 1, 2**70):
        request = GenerationRequest(prompt="Hello", sampling=SamplingParams(max_tokens=max_tokens))
        with pytest.raises(InvalidRequestError) as info:
            await builtin_engine.asubmit(request)
        assert info.value.param == "max_tokens" and str(window) in str(info.value)
    stream = await builtin_engine.asubmit(GenerationRequest(
        prompt="Hello", sampling=SamplingParams(max_tokens=window, temperature=0)))
    assert stream.max_tokens == window - stream.prompt_tokens  # within the window: clipped
    stream.cancel()
    await stream.collect()


async def test_the_engine_refuses_a_huge_prompt_part_way(builtin_engine):
    text = "The quick brown fox jumps over the lazy dog. " * 240_000  # 10.8 MB
    for request in (GenerationRequest(prompt=text),
                    GenerationRequest(messages=[{"role": "user", "content": text}])):
        with pytest.raises(ContextLengthError) as info:
            await builtin_engine.asubmit(request)
        assert info.value.at_least and info.value.max_context == builtin_engine.max_context


async def test_the_engine_names_a_lone_surrogate(builtin_engine):
    for request, param in ((GenerationRequest(prompt="a\ud800"), "prompt"),
                           (GenerationRequest(messages=[{"role": "user", "content": "a\ud800"}]),
                            "messages")):
        with pytest.raises(InvalidRequestError) as info:
            await builtin_engine.asubmit(request)
        assert info.value.param == param
