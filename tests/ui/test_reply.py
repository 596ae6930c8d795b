"""One reply as displayed: reasoning split by the API's own parser, the live speed readout, the
statistics line (a stopped reply marked as such) and error notes."""

from __future__ import annotations

import random

from inference.reasoning import ReasoningParser
from inference.types import GenerationChunk, Timings, Usage
from ui.conversation import to_engine_messages
from ui.reply import Reply, format_stats, generation_prompt, live_speed

THINKING_PROMPT = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def chunk(text: str, tokens: int = 1, finish: str | None = None, **kwargs) -> GenerationChunk:
    return GenerationChunk("r", text, list(range(tokens)), finish_reason=finish, **kwargs)


def titles(messages):
    return [(m.get("metadata") or {}).get("title") for m in messages]


def test_format_stats():
    summary, details = format_stats(Usage(12, 1), Timings(0.001, 0.05, 0.2, 31.25), "length")
    assert summary == "12 prompt · 1 completion token · 31.2 tok/s · finish: length"
    assert details == "queue 1 ms · first token 50 ms · total 0.20 s"
    assert format_stats(Usage(3, 5), None, "stop") == (
        "3 prompt · 5 completion tokens · finish: stop", "")


def test_a_stopped_reply_says_so_in_its_statistics():
    summary, _ = format_stats(Usage(3, 7), Timings(0, 0.01, 0.3, 20.0), "cancelled")
    assert summary == "■ Stopped · 3 prompt · 7 completion tokens · 20.0 tok/s"


def test_generation_prompt_is_the_assistant_turn_the_reply_continues():
    assert generation_prompt(THINKING_PROMPT) == "<|im_start|>assistant\n<think>\n"
    assert generation_prompt("") == ""
    assert generation_prompt("x" * 50) == "x" * 40  # no chat markup: the last characters


def test_live_speed_counts_from_the_first_token():
    assert live_speed(0, None, 5.0) == "Generating · 0 tokens · 0.0 tok/s"
    assert live_speed(1, 1.0, 5.0) == "Generating · 1 token · 0.0 tok/s"
    assert live_speed(11, 1.0, 2.0) == "Generating · 11 tokens · 10.0 tok/s"


def test_streaming_shows_the_live_readout_then_the_statistics():
    clock = Clock()
    reply = Reply(clock=clock)
    reply.feed(chunk("Hel"))
    clock.now += 0.5
    reply.feed(chunk("lo", tokens=5))
    messages = reply.messages()
    assert messages[0] == {"role": "assistant", "content": "Hello"}
    assert messages[1]["metadata"] == {"title": "Generating · 6 tokens · 10.0 tok/s",
                                       "status": "done"}
    reply.feed(chunk("!", finish="stop", usage=Usage(4, 7), timings=Timings(0, 0.1, 0.7, 10.0)))
    assert titles(reply.messages()) == [None, "4 prompt · 7 completion tokens · 10.0 tok/s · "
                                              "finish: stop"]
    assert reply.messages()[0]["content"] == "Hello!"


def test_a_reply_that_starts_inside_think_streams_into_the_reasoning_block():
    reply = Reply(THINKING_PROMPT, opens_reasoning=True)
    reply.feed(chunk("Let me"))
    reply.feed(chunk(" think."))
    shown = reply.messages()
    assert shown[0] == {"role": "assistant", "content": "Let me think.",
                        "metadata": {"title": "Reasoning", "status": "pending"}}
    assert titles(shown)[1].startswith("Generating")  # no empty answer bubble meanwhile
    reply.feed(chunk("\n</think>\n\nYes.", finish="stop", usage=Usage(1, 3), timings=Timings()))
    shown = reply.messages()
    assert shown[0]["metadata"] == {"title": "Reasoning", "status": "done"}
    assert shown[1] == {"role": "assistant", "content": "Yes."}
    assert "`<|im_start|>assistant\\n<think>\\n`" in shown[2]["content"]
    # Only the answer goes back to the model.
    assert to_engine_messages([{"role": "user", "content": "q"}, *shown]) == [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "Yes."}]


def test_the_ui_splits_reasoning_exactly_as_the_api_does():
    text = "<think>\nplan: 1 < 2, <thi not a tag\n</think>\n\nAnswer </think> done."
    api = ReasoningParser()
    expected = api.feed(text)
    expected += api.finish()
    rng = random.Random(7)
    for _ in range(20):
        reply, position = Reply(), 0
        while position < len(text):
            size = rng.randint(1, 6)
            reply.feed(chunk(text[position:position + size]))
            position += size
        reply.feed(chunk("", tokens=0, finish="stop"))
        assert (reply.reasoning, reply.answer) == (expected.reasoning, expected.content)


def test_an_error_is_a_side_note_never_sent_to_the_model():
    reply = Reply()
    reply.fail("The server is busy")
    messages = reply.messages()
    assert messages == [{"role": "assistant", "content": "The server is busy",
                         "metadata": {"title": "⚠️ Error"}}]
    assert to_engine_messages([{"role": "user", "content": "q"}, *messages]) == [
        {"role": "user", "content": "q"}]


def test_a_failed_generation_keeps_its_text_and_statistics():
    reply = Reply()
    reply.feed(chunk("partial"))
    reply.feed(chunk("", tokens=0, finish="error", error="CUDA out of memory",
                     usage=Usage(2, 1), timings=Timings()))
    assert titles(reply.messages()) == [None, "⚠️ Error",
                                        "2 prompt · 1 completion token · 0.0 tok/s · "
                                        "finish: error"]
    assert reply.messages()[1]["content"] == "Generation failed: CUDA out of memory"
