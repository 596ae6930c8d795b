"""The chat bookkeeping: Gradio's displayed history to engine messages, Retry and Undo, sampling
from the sliders, and error sentences worded for their tab."""

from __future__ import annotations

from inference.errors import ContextLengthError, EngineOverloadedError, ModelNotLoadedError
from ui.conversation import (
    content_text,
    error_text,
    for_retry,
    for_undo,
    sampling_params,
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


def test_error_text_is_a_sentence_not_a_traceback():
    assert "2,000" not in error_text(ContextLengthError(5000, 4096))
    assert "5000 tokens" in error_text(ContextLengthError(5000, 4096))
    assert "4096" in error_text(ContextLengthError(5000, 4096))
    assert "busy" in error_text(EngineOverloadedError(64, 64))
    assert "loading" in error_text(ModelNotLoadedError())
    assert "could not be loaded" in error_text(ModelNotLoadedError("boom", "error"))
    assert error_text(RuntimeError("CUDA out of memory")) == "Generation failed: CUDA out of memory"


def test_a_prompt_too_long_is_worded_for_its_tab():
    chat = error_text(ContextLengthError(5000, 4096))
    assert chat.startswith("The conversation is too long") and "new chat" in chat
    completion = error_text(ContextLengthError(5000, 4096), "completion")
    assert completion.startswith("The prompt is too long") and "Shorten the prompt." in completion
    assert "chat" not in completion


def test_sampling_params_from_sliders():
    params = sampling_params(0.0, 1.0, 0, 1.0)
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens) == (0.0, 1.0, 0, 1)
    assert isinstance(params.top_k, int) and isinstance(params.max_tokens, int)
    assert sampling_params(0.7, 0.8, 20, 0).max_tokens == 1
