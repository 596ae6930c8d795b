"""The one reasoning parser (API and playground): `<think>` blocks split from the content, however
the text is streamed."""

from __future__ import annotations

import random

import pytest

from inference.reasoning import (
    ReasoningDelta,
    ReasoningParser,
    partial_tag_length,
    prompt_opens_reasoning,
)

CASES = [
    # (text, starts inside <think>, reasoning, content)
    ("<think>\nLet me think.\nStill.\n</think>\n\nThe answer is 4.", False,
     "Let me think.\nStill.", "The answer is 4."),
    ("Just an answer with 1 < 2.", False, "", "Just an answer with 1 < 2."),
    ("Thinking-only model.\n</think>\n\nAnswer.", True, "Thinking-only model.", "Answer."),
    ("<think>\n\n</think>\n\nEmpty thoughts.", False, "", "Empty thoughts."),
    ("<think>\ncut off by max_tokens", False, "cut off by max_tokens", ""),
    ("before </think> after", False, "", "before after"),
]


def whole(text: str, in_reasoning: bool) -> ReasoningDelta:
    parser = ReasoningParser(in_reasoning=in_reasoning)
    result = parser.feed(text)
    result += parser.finish()
    return result


@pytest.mark.parametrize(("text", "inside", "reasoning", "content"), CASES)
def test_split(text, inside, reasoning, content):
    assert whole(text, inside) == ReasoningDelta(reasoning, content)


@pytest.mark.parametrize(("text", "inside", "reasoning", "content"), CASES)
def test_streaming_in_any_pieces_gives_the_same_split(text, inside, reasoning, content):
    rng = random.Random(text)
    for _ in range(30):
        parser = ReasoningParser(in_reasoning=inside)
        result = ReasoningDelta()
        position = 0
        while position < len(text):
            size = rng.randint(1, 5)
            result += parser.feed(text[position : position + size])
            position += size
        result += parser.finish()
        assert result == ReasoningDelta(reasoning, content)


def test_partial_tag_is_held_back_until_known():
    parser = ReasoningParser()
    assert parser.feed("Hello <thi") == ReasoningDelta("", "Hello ")
    assert parser.feed("s is not a tag") == ReasoningDelta("", "<this is not a tag")


def test_partial_tag_length():
    assert partial_tag_length("abc</thi", ("</think>",)) == 5
    assert partial_tag_length("abc</think", ("</think>", "<tool_call>")) == 7
    assert partial_tag_length("abc", ("</think>",)) == 0
    assert partial_tag_length("a<", ("<tool_call>", "</tool_call>")) == 1


def test_prompt_opens_reasoning():
    assert prompt_opens_reasoning("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n")


def test_in_reasoning_follows_the_tags():
    parser = ReasoningParser()
    assert not parser.in_reasoning
    parser.feed("<think>\nplan")
    assert parser.in_reasoning
    parser.feed("</thi")  # not yet known to be the closing tag
    assert parser.in_reasoning
    parser.feed("nk>\n\nAnswer")
    assert not parser.in_reasoning
    assert ReasoningParser(in_reasoning=True).in_reasoning
