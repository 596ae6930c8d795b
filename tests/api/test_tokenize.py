"""POST /tokenize and /detokenize on the built-in model's real Qwen3 tokenizer: counts that agree with
what generation bills, a round trip through non-ASCII text, and the 400s."""

from __future__ import annotations

import json

import pytest

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]


async def post(api_client, path: str, body: dict) -> dict:
    response = await api_client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_text_is_counted_as_generation_counts_it(api_client, builtin_engine):
    body = await post(api_client, "/tokenize", {"prompt": "Once upon a time"})
    assert body["tokens"] == builtin_engine.tokenizer.encode("Once upon a time",
                                                             add_special_tokens=False)
    assert body["count"] == len(body["tokens"]) and body["max_model_len"] == builtin_engine.max_context
    assert "token_strs" not in body
    generated = await post(api_client, "/completions", {"prompt": "Once upon a time",
                                                        "max_tokens": 1})
    assert generated["usage"]["prompt_tokens"] == body["count"]


async def test_a_chat_is_counted_as_chat_completions_bills_it(api_client):
    body = await post(api_client, "/tokenize", {"messages": CHAT})
    chat = await post(api_client, "/chat/completions", {"messages": CHAT, "max_tokens": 1})
    assert body["count"] == chat["usage"]["prompt_tokens"]
    without_prompt = await post(api_client, "/tokenize", {"prompt": "Hi there"})
    assert body["count"] > without_prompt["count"]  # the template's tokens are counted


async def test_tools_are_counted_too(api_client):
    from tests.schemas import TOOLS

    plain = await post(api_client, "/tokenize", {"messages": CHAT})
    with_tools = await post(api_client, "/tokenize", {"messages": CHAT, "tools": TOOLS})
    assert with_tools["count"] > plain["count"]


async def test_round_trip_through_non_ascii_text(api_client):
    text = "Grüße, 世界! 🌍 <|im_end|> tabs\tand\nlines"
    tokens = (await post(api_client, "/tokenize", {"prompt": text, "return_token_strs": True}))
    assert len(tokens["token_strs"]) == tokens["count"]
    assert "<|im_end|>" in tokens["token_strs"]  # a special token in the text is that token
    back = await post(api_client, "/detokenize", {"tokens": tokens["tokens"]})
    assert back["prompt"] == text


async def test_a_long_text_is_counted_beyond_the_window(api_client, builtin_engine, monkeypatch):
    monkeypatch.setattr(builtin_engine.settings, "max_context", 16)
    body = await post(api_client, "/tokenize", {"prompt": "word" + " word" * 39})
    assert body["count"] == 40 and body["max_model_len"] == 16  # the client sees it will not fit


async def test_counting_stops_at_four_windows(api_client, builtin_engine, monkeypatch):
    monkeypatch.setattr(builtin_engine.settings, "max_context", 16)
    assert (await post(api_client, "/tokenize", {"prompt": "word" + " word" * 62}))["count"] == 63
    response = await api_client.post("/tokenize", json={"prompt": "word" + " word" * 63})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "prompt" and "up to 63" in error["message"]
    assert "64 tokens" in error["message"]


@pytest.mark.parametrize("path, body, param", [
    ("/tokenize", {}, "prompt"),
    ("/tokenize", {"prompt": "x", "messages": CHAT}, "messages"),
    ("/tokenize", {"messages": []}, "messages"),
    ("/tokenize", {"prompt": "bad \ud800 text"}, "prompt"),
    ("/tokenize", {"messages": [{"role": "user", "content": "x"}],
                   "chat_template_kwargs": {"chat_template": "{{ 1 }}"}}, "chat_template_kwargs"),
    ("/detokenize", {"tokens": [10**7]}, "tokens"),
    ("/detokenize", {"tokens": [-1]}, "tokens[0]"),
    ("/detokenize", {"tokens": "12"}, "tokens"),
])
async def test_invalid_requests_are_400(api_client, path, body, param):
    # json.dumps writes a lone surrogate as the escape "\ud800", as a client's JSON would.
    response = await api_client.post(path, content=json.dumps(body),
                                     headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
