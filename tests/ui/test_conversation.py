"""The chat bookkeeping: Gradio's displayed history to engine messages, replies to displayed
messages, reasoning split, statistics and error sentences."""

from __future__ import annotations

from inference.errors import ContextLengthError, EngineOverloadedError, ModelNotLoadedError
from inference.types import Timings, Usage
from ui.conversation import (
    content_text,
    error_text,
    for_retry,
    for_undo,
    format_stats,
    reply_messages,
    sampling_params,
    split_reasoning,
    to_engine_messages,
)

# What Gradio 6 hands a handler: content as a list of typed parts, side notes with metadata.
HISTORY = [
    {"role": "user", "content": [{"type": "text", "text": "Hi"}], "metadata": None},
    {"role": "assistant", "content": [{"type": "text", "text": "plan"}],
     "metadata": {"title": "Reasoning", "status": "done"}},
    {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
    {"role": "assistant", "content": "3 prompt · 2 completion tokens",
     "metadata": {"title": "3 prompt · 2 completion tokens", "status": "done"}},
    {"role": "user", "content": "How are you?"},
]


def test_content_text_reads_strings_and_parts():
    assert content_text("a") == "a"
    assert content_text([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "ab"
    assert content_text([{"type": "file", "file": {"path": "x.png"}}]) == ""
    assert content_text(None) == ""


def test_engine_messages_skip_side_notes_and_add_the_system_prompt():
    assert to_engine_messages(HISTORY, "  Be brief. ") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ]
    assert to_engine_messages(HISTORY)[0] == {"role": "user", "content": "Hi"}


def test_consecutive_bubbles_of_one_role_are_one_turn():
    history = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert to_engine_messages(history) == [{"role": "user", "content": "a\n\nb"}]


def test_retry_keeps_the_last_user_message_and_undo_returns_it():
    assert for_retry(HISTORY) == HISTORY
    assert for_retry(HISTORY[:4]) == HISTORY[:1]
    assert for_undo(HISTORY) == (HISTORY[:4], "How are you?")
    assert for_undo(HISTORY[:4]) == ([], "Hi")
    assert for_undo([]) == ([], "")


def test_split_reasoning():
    assert split_reasoning("plain answer") == (None, "plain answer", True)
    assert split_reasoning("<think>\nhmm\n</think>\n\nYes.") == ("hmm", "Yes.", True)
    assert split_reasoning("<think>still thinking") == ("still thinking", "", False)
    # A template that opened <think> in the prompt (Qwen3 thinking models).
    assert split_reasoning("hmm</think>Yes.") == ("hmm", "Yes.", True)
    assert split_reasoning("hmm so far", opened=True) == ("hmm so far", "", False)


def test_reply_messages_put_reasoning_answer_and_stats_in_order():
    stats = ("1 prompt · 2 completion tokens", "details")
    messages = reply_messages("<think>r</think>answer", stats=stats)
    assert [m.get("metadata", {}).get("title") for m in messages] == [
        "Reasoning", None, "1 prompt · 2 completion tokens"]
    assert messages[0]["metadata"]["status"] == "done"
    assert messages[1] == {"role": "assistant", "content": "answer"}
    assert reply_messages("<think>r")[0]["metadata"]["status"] == "pending"
    # None of it goes back to the model except the answer.
    assert to_engine_messages([{"role": "user", "content": "q"}, *messages]) == [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "answer"}]


def test_an_error_is_a_side_note_never_sent_to_the_model():
    messages = reply_messages("", error="The server is busy")
    assert messages == [{"role": "assistant", "content": "The server is busy",
                         "metadata": {"title": "⚠️ Error"}}]
    assert to_engine_messages([{"role": "user", "content": "q"}, *messages]) == [
        {"role": "user", "content": "q"}]


def test_format_stats():
    summary, details = format_stats(Usage(12, 1), Timings(0.001, 0.05, 0.2, 31.25), "length")
    assert summary == "12 prompt · 1 completion token · 31.2 tok/s · finish: length"
    assert details == "queue 1 ms · first token 50 ms · total 0.20 s"
    assert format_stats(Usage(3, 5), None, "stop") == (
        "3 prompt · 5 completion tokens · finish: stop", "")


def test_error_text_is_a_sentence_not_a_traceback():
    assert "2,000" not in error_text(ContextLengthError(5000, 4096))
    assert "5000 tokens" in error_text(ContextLengthError(5000, 4096))
    assert "4096" in error_text(ContextLengthError(5000, 4096))
    assert "busy" in error_text(EngineOverloadedError(64, 64))
    assert "loading" in error_text(ModelNotLoadedError())
    assert "could not be loaded" in error_text(ModelNotLoadedError("boom", "error"))
    assert error_text(RuntimeError("CUDA out of memory")) == "Generation failed: CUDA out of memory"


def test_sampling_params_from_sliders():
    params = sampling_params(0.0, 1.0, 0, 1.0)
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens) == (0.0, 1.0, 0, 1)
    assert isinstance(params.top_k, int) and isinstance(params.max_tokens, int)
    assert sampling_params(0.7, 0.8, 20, 0).max_tokens == 1
