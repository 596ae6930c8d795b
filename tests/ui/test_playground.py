"""The playground's handlers against the real engine on the built-in model: streamed chat and
completion, slider values reaching the engine, the thinking switch reaching the chat template, Stop
leaving a reply with its statistics, closing a stream freeing the request, readable errors."""

from __future__ import annotations

import asyncio

from inference import Engine, EngineSettings
from ui.playground import Playground, Running

SLIDERS = dict(temperature=0.7, top_p=0.8, top_k=20)


def _answer(history):
    return [m for m in history if m["role"] == "assistant" and not m.get("metadata")]


def _notes(history):
    return [m for m in history if m.get("metadata")]


async def test_chat_streams_a_reply_with_its_statistics(builtin_engine):
    playground = Playground(builtin_engine)
    history = [{"role": "user", "content": "Hello"}]
    updates = [h async for h in playground.chat(history, "Be brief.", max_tokens=8, **SLIDERS)]
    # Streamed, not one final answer: the first token is shown at once (later ones are paced).
    assert len(updates) >= 2 and _notes(updates[0])[-1]["metadata"]["title"].startswith(
        "Generating")
    final = updates[-1]
    assert final[0] == history[0]
    assert _answer(final) and _answer(final)[0]["content"]
    stats = _notes(final)[-1]["metadata"]["title"]
    assert "8 completion tokens" in stats and "tok/s" in stats and "finish: length" in stats
    lengths = [len(_answer(h)[0]["content"]) for h in updates if _answer(h)]
    assert lengths == sorted(lengths)  # the reply only grows


async def test_max_tokens_one_gives_one_token(builtin_engine):
    playground = Playground(builtin_engine)
    updates = [h async for h in playground.chat([{"role": "user", "content": "Hi"}], "",
                                                max_tokens=1, **SLIDERS)]
    assert "· 1 completion token ·" in _notes(updates[-1])[-1]["metadata"]["title"]


async def test_closing_the_stream_frees_the_engine_request(builtin_engine):
    playground = Playground(builtin_engine)
    chat = playground.chat([{"role": "user", "content": "Tell me a long story"}], "",
                           max_tokens=2000, **SLIDERS)
    for _ in range(3):
        await anext(chat)
    assert builtin_engine.active_count == 1
    await chat.aclose()  # what Gradio does when Stop cancels the event
    for _ in range(50):
        if builtin_engine.active_count == 0:
            break
        await asyncio.sleep(0.05)
    assert builtin_engine.active_count == 0


def _details(history):
    return _notes(history)[-1]["content"]


async def test_the_thinking_switch_reaches_the_chat_template(builtin_engine):
    playground = Playground(builtin_engine)
    assert playground.supports_thinking
    history = [{"role": "user", "content": "Hello"}]
    on = [h async for h in playground.chat(history, "", max_tokens=6, thinking=True, **SLIDERS)]
    # The built-in template opens <think> when asked to think: the reply is all reasoning.
    assert "`<|im_start|>assistant\\n<think>\\n`" in _details(on[-1])
    reasoning = [m for m in on[-1] if (m.get("metadata") or {}).get("title") == "Reasoning"]
    assert reasoning and reasoning[0]["content"] and reasoning[0]["metadata"]["status"] == "done"
    assert any(m.get("metadata", {}).get("status") == "pending" for h in on[:-1] for m in h
               if m.get("metadata", {}).get("title") == "Reasoning")  # streamed into the block
    off = [h async for h in playground.chat(history, "", max_tokens=6, thinking=False, **SLIDERS)]
    assert "`<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n`" in _details(off[-1])
    default = [h async for h in playground.chat(history, "", max_tokens=6, **SLIDERS)]
    assert "`<|im_start|>assistant\\n`" in _details(default[-1])


async def test_stop_ends_the_reply_with_its_statistics(builtin_engine):
    playground = Playground(builtin_engine)
    assert not playground.stop("page-1")  # nothing running
    chat = playground.chat([{"role": "user", "content": "Tell me a long story"}], "",
                           max_tokens=2000, session="page-1", **SLIDERS)
    for _ in range(3):
        await anext(chat)
    assert playground.is_running("page-1") and not playground.is_running("another-page")
    assert not playground.stop("another-page")
    assert playground.stop("page-1")
    rest = [h async for h in chat]
    stats = _notes(rest[-1])[-1]["metadata"]["title"]
    assert stats.startswith("■ Stopped · ") and "completion tokens" in stats
    assert _answer(rest[-1])[0]["content"]  # the text so far stays
    assert not any(m["metadata"]["title"] == "⚠️ Error" for m in _notes(rest[-1]))
    assert not playground.stop("page-1") and not playground.is_running("page-1")  # it is over
    for _ in range(50):
        if builtin_engine.active_count == 0:
            break
        await asyncio.sleep(0.05)
    assert builtin_engine.active_count == 0


def test_a_stop_while_submitting_cancels_the_stream_once_it_is_there():
    class Stream:
        cancelled = 0

        def cancel(self):
            self.cancelled += 1

    running, stream = Running(), Stream()
    running.stop()
    running.attach(stream)
    assert running.stopped and stream.cancelled == 1


async def test_stop_during_a_completion(builtin_engine):
    playground = Playground(builtin_engine)
    run = playground.complete("Once", max_tokens=2000, session="p", **SLIDERS)
    await anext(run)
    assert playground.stop("p", "completion") and not playground.stop("p", "chat")
    text, stats = [u async for u in run][-1]
    assert text and stats.startswith("■ Stopped · ")


async def test_completion_streams_raw_text(builtin_engine):
    playground = Playground(builtin_engine)
    updates = [u async for u in playground.complete("Once upon a time", max_tokens=6, **SLIDERS)]
    assert updates[0][1] == "Generating…" and len(updates) >= 2  # the first token at once
    text, stats = updates[-1]
    assert text and "6 completion tokens" in stats and "first token" in stats
    assert [u async for u in playground.complete("  ", max_tokens=6, **SLIDERS)] == [
        ("", "Enter a prompt first.")]


async def test_a_prompt_too_long_is_a_readable_message(builtin_engine, monkeypatch):
    monkeypatch.setattr(builtin_engine.settings, "max_context", 16)
    playground = Playground(builtin_engine)
    history = [{"role": "user", "content": "word " * 50}]
    updates = [h async for h in playground.chat(history, "", max_tokens=4, **SLIDERS)]
    note = updates[-1][-1]
    assert note["metadata"]["title"] == "⚠️ Error"
    assert "too long" in note["content"] and "context window is 16" in note["content"]
    text, stats = [u async for u in playground.complete("word " * 50, max_tokens=4, **SLIDERS)][-1]
    assert text == "" and "too long" in stats and "Traceback" not in stats


async def test_an_engine_still_loading_says_so():
    playground = Playground(Engine(EngineSettings(model="builtin")))  # never started
    updates = [h async for h in playground.chat([{"role": "user", "content": "Hi"}], "",
                                                max_tokens=4, **SLIDERS)]
    assert "still loading" in updates[-1][-1]["content"]
    state = playground.page_state({"host": "127.0.0.1:7860"})
    assert "loading" in state.status and state.banner == ""
    assert state.defaults.max_tokens == 2048


async def test_page_state_of_a_ready_engine(builtin_engine):
    playground = Playground(builtin_engine, api_key=True)
    state = playground.page_state({"host": "127.0.0.1:7860"})
    assert state.defaults == builtin_engine.defaults
    assert state.max_tokens_limit == 8192
    assert "ready" in state.status and state.banner == ""  # builtin on purpose: no banner
    assert state.thinking  # the built-in template has Qwen3's enable_thinking
    assert "http://127.0.0.1:7860/api/v1/chat/completions" in state.curl_chat
    assert "NF4SERVE_API_KEY" in state.openai_python
    assert "Quantization" in state.model


def test_fallback_and_failure_banners():
    class Fallback:
        state, is_fallback, fallback_reason, error = "ready", True, "Model 'x' is not cached.", None

    class Failed:
        state, is_fallback, fallback_reason, error = "error", False, None, "no such model"

    banner = Playground(Fallback()).banner()
    assert banner.startswith("<details><summary><strong>⚠️ Built-in model: replies are "
                             "noise</strong></summary>")  # one line, the rest on demand
    assert "built-in test model" in banner and "Model &#x27;x&#x27; is not cached." in banner
    assert "no such model" in Playground(Failed()).banner()
    assert not Playground(Failed()).supports_thinking
