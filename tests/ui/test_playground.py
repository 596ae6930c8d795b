"""The playground's handlers against the real engine on the built-in model: streamed chat and
completion, slider values reaching the engine, stop freeing the request, readable errors."""

from __future__ import annotations

import asyncio

from inference import Engine, EngineSettings
from ui.playground import Playground

SLIDERS = dict(temperature=0.7, top_p=0.8, top_k=20)


def _answer(history):
    return [m for m in history if m["role"] == "assistant" and not m.get("metadata")]


def _notes(history):
    return [m for m in history if m.get("metadata")]


async def test_chat_streams_a_reply_with_its_statistics(builtin_engine):
    playground = Playground(builtin_engine)
    history = [{"role": "user", "content": "Hello"}]
    updates = [h async for h in playground.chat(history, "Be brief.", max_tokens=8, **SLIDERS)]
    assert len(updates) >= 3  # streamed, not one final answer
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


async def test_completion_streams_raw_text(builtin_engine):
    playground = Playground(builtin_engine)
    updates = [u async for u in playground.complete("Once upon a time", max_tokens=6, **SLIDERS)]
    assert updates[0][1] == "Generating…" and len(updates) >= 3
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
    assert "http://127.0.0.1:7860/api/v1/chat/completions" in state.curl_chat
    assert "NF4SERVE_API_KEY" in state.openai_python
    assert "Quantization" in state.model


def test_fallback_and_failure_banners():
    class Fallback:
        state, is_fallback, fallback_reason, error = "ready", True, "Model 'x' is not cached.", None

    class Failed:
        state, is_fallback, fallback_reason, error = "error", False, None, "no such model"

    assert "built-in test model" in Playground(Fallback()).banner()
    assert "Model 'x' is not cached." in Playground(Fallback()).banner()
    assert "no such model" in Playground(Failed()).banner()
