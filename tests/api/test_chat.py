"""POST /chat/completions on the real app and the built-in model (random weights: assertions are on
shapes, validity and determinism, never on what the text says)."""

from __future__ import annotations

import json
import math
import threading

import jsonschema
import pytest
import torch

from api.protocol.chat import ChatCompletionRequest
from inference.types import Grammar
from tests.api.events import collect_chat_stream, read_events
from tests.schemas import PERSON, TOOLS, WEATHER

USER = [{"role": "user", "content": "Name a colour."}]


async def chat(client, **fields):
    response = await client.post("/chat/completions", json={"messages": USER, **fields})
    assert response.status_code == 200, response.text
    return response.json()


async def chat_stream(client, **fields):
    response = await client.post("/chat/completions",
                                 json={"messages": USER, "stream": True, **fields})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return read_events(response.text)


async def test_response_has_openai_shape(api_client, builtin_engine):
    body = await chat(api_client, max_tokens=6, seed=1)
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and body["model"] == builtin_engine.model_name
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["finish_reason"] in ("stop", "length")
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert "tool_calls" not in choice["message"]
    usage = body["usage"]
    prompt = builtin_engine.render_chat(USER)
    assert usage["prompt_tokens"] == len(builtin_engine.tokenizer.encode(prompt))
    assert 1 <= usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_same_seed_same_text_and_greedy_is_deterministic(api_client):
    first = await chat(api_client, max_tokens=8, seed=42, temperature=1.0)
    again = await chat(api_client, max_tokens=8, seed=42, temperature=1.0)
    assert first["choices"][0]["message"] == again["choices"][0]["message"]
    greedy = [await chat(api_client, max_tokens=8, temperature=0) for _ in range(2)]
    assert greedy[0]["choices"][0]["message"] == greedy[1]["choices"][0]["message"]


async def test_n_choices_each_seeded_as_its_own_request(api_client):
    body = await chat(api_client, n=3, max_tokens=5, seed=7, temperature=1.0)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"]["completion_tokens"] <= 15
    single = await chat(api_client, max_tokens=5, seed=8, temperature=1.0)  # choice 1: seed 7 + 1
    assert body["choices"][1]["message"] == single["choices"][0]["message"]


async def test_stop_string_cuts_and_is_not_returned(api_client):
    full = (await chat(api_client, max_tokens=24, seed=3, temperature=1.0))["choices"][0]
    text = full["message"]["content"]
    assert len(text) > 6, text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = (await chat(api_client, max_tokens=24, seed=3, temperature=1.0, stop=[stop]))
    choice = cut["choices"][0]
    assert choice["message"]["content"] == text[: text.index(stop)]
    assert choice["finish_reason"] == "stop"


async def test_logprobs_in_openai_shape(api_client):
    body = await chat(api_client, max_tokens=6, seed=5, logprobs=True, top_logprobs=3)
    choice = body["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"]
    for item in content:
        assert set(item) == {"token", "logprob", "bytes", "top_logprobs"}
        assert item["logprob"] <= 0 and len(item["top_logprobs"]) == 3
        assert all(top["logprob"] <= 0 for top in item["top_logprobs"])
    if choice["finish_reason"] == "length":  # every token is in the text: bytes are exact
        raw = b"".join(bytes(item["bytes"]) for item in content)
        assert raw.decode("utf-8") == choice["message"]["content"]


async def test_stream_agrees_with_json_and_ends_with_usage_and_done(api_client):
    fields = {"max_tokens": 10, "seed": 11, "temperature": 1.0, "n": 2}
    body = await chat(api_client, **fields)
    events = await chat_stream(api_client, stream_options={"include_usage": True}, **fields)
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == body["usage"]
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["id"].startswith("chatcmpl-")
    streamed = collect_chat_stream(events)
    for choice in body["choices"]:
        got = streamed[choice["index"]]
        assert got["role"] == "assistant"
        assert got["content"] == choice["message"]["content"]
        assert got["finish"] == choice["finish_reason"]


async def test_stream_without_include_usage_has_no_usage_chunk(api_client):
    events = await chat_stream(api_client, max_tokens=3)
    assert events[-1] == "[DONE]"
    assert all(event["choices"] for event in events[:-1])
    assert all(event.get("usage") is None for event in events[:-1])


async def test_json_schema_output_validates(api_client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    for seed in (1, 2):
        body = await chat(api_client, max_tokens=48, seed=seed, response_format=fmt)
        choice = body["choices"][0]
        assert choice["finish_reason"] == "stop"
        jsonschema.validate(json.loads(choice["message"]["content"]), PERSON)


async def test_json_object_output_parses(api_client, builtin_engine, monkeypatch):
    # Random weights never close a JSON string by themselves; a bias towards `"` and `}` stands in
    # for a model that wants to finish. The grammar (real) decides what is valid and ends the turn.
    vocab = builtin_engine.tokenizer.get_vocab()
    closing = torch.tensor([i for token, i in vocab.items() if '"' in token or "}" in token])
    original = ChatCompletionRequest.to_sampling_params
    grammars = []

    def bias(output_ids, logits):  # batch-shaped: runs after the grammar's mask (-inf stays -inf)
        logits[:, closing] += 50.0
        return logits

    def biased(self, index=0):
        params = original(self, index)
        grammars.append(params.grammar)
        if params.grammar is not None and params.grammar.kind == "json_object":
            params.logits_processors.append(bias)
        return params

    monkeypatch.setattr(ChatCompletionRequest, "to_sampling_params", biased)
    for seed in (4, 5):
        body = await chat(api_client, max_tokens=256, seed=seed, temperature=1.0,
                          response_format={"type": "json_object"})
        choice = body["choices"][0]
        assert choice["finish_reason"] == "stop", choice  # the grammar ended the turn
        assert isinstance(json.loads(choice["message"]["content"]), dict)
    assert grammars == [Grammar("json_object")] * 2  # the bias rode on grammar-constrained requests


def check_calls(calls, name=None):
    assert calls
    for call in calls:
        assert call["id"].startswith("call_") and call["type"] == "function"
        function = call["function"]
        arguments = json.loads(function["arguments"])
        if name:
            assert function["name"] == name
        if function["name"] == "get_weather":
            jsonschema.validate(arguments, WEATHER)
        else:
            assert function["name"] == "get_time" and arguments == {}


def check_header_deltas(events):
    """Each call's first delta is its header alone: index, id, type, name and `arguments: ""`;
    argument text only in later deltas, which never repeat the header."""
    seen = set()
    for event in events[:-1]:
        for choice in event["choices"]:
            for call in choice["delta"].get("tool_calls") or []:
                if call["index"] not in seen:
                    seen.add(call["index"])
                    assert set(call) == {"index", "id", "type", "function"}, call
                    assert call["function"] == {"name": call["function"]["name"], "arguments": ""}
                else:
                    assert set(call) == {"index", "function"}, call
                    assert set(call["function"]) == {"arguments"} and call["function"]["arguments"]
    assert seen


@pytest.mark.parametrize(
    "tool_choice",
    ["required", {"type": "function", "function": {"name": "get_weather"}}],
    ids=["required", "named"],
)
async def test_forced_tool_calls_valid_and_streaming_agrees(api_client, tool_choice):
    name = tool_choice["function"]["name"] if isinstance(tool_choice, dict) else None
    fields = {"tools": TOOLS, "tool_choice": tool_choice, "max_tokens": 96, "seed": 2,
              "parallel_tool_calls": False}
    body = await chat(api_client, **fields)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    check_calls(choice["message"]["tool_calls"], name)

    events = await chat_stream(api_client, **fields)
    check_header_deltas(events)
    streamed = collect_chat_stream(events)[0]
    assert streamed["finish"] == "tool_calls" and streamed["content"] == ""
    calls = [streamed["tool_calls"][i] for i in sorted(streamed["tool_calls"])]
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (c["function"]["name"], c["function"]["arguments"]) for c in choice["message"]["tool_calls"]]


async def test_required_allows_parallel_calls(api_client):
    body = await chat(api_client, tools=TOOLS, tool_choice="required", max_tokens=300, seed=5)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    check_calls(choice["message"]["tool_calls"])


async def test_tool_result_round_trip(api_client):
    first = await chat(api_client, tools=TOOLS, tool_choice="required", max_tokens=96, seed=2,
                       parallel_tool_calls=False)
    message = first["choices"][0]["message"]
    call = message["tool_calls"][0]
    messages = USER + [
        message,
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 21}'},
    ]
    response = await api_client.post("/chat/completions", json={
        "messages": messages, "tools": TOOLS, "max_tokens": 8, "seed": 1})
    assert response.status_code == 200, response.text
    answer = response.json()["choices"][0]
    assert answer["finish_reason"] in ("stop", "length", "tool_calls")
    assert "<tool_call>" not in (answer["message"]["content"] or "")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_forced_call_markup_never_leaks(api_client, stream):
    # A forced call makes the model write `<tool_call>` blocks (the grammar emits the markup);
    # tests/api/test_chat_forced.py forces text, reasoning and calls together.
    fields = {"tools": TOOLS, "tool_choice": "required", "max_tokens": 300, "seed": 6}
    if stream:
        choice = collect_chat_stream(await chat_stream(api_client, **fields))[0]
        texts = [choice["content"], choice["reasoning"]]
        texts += [c["name"] + c["arguments"] for c in choice["tool_calls"].values()]
    else:
        message = (await chat(api_client, **fields))["choices"][0]["message"]
        texts = [message["content"] or "", message.get("reasoning_content") or ""]
        texts += [c["function"]["name"] + c["function"]["arguments"] for c in message["tool_calls"]]
    assert len(texts) > 2
    for tag in ("<tool_call>", "</tool_call>", "<think>", "</think>", "<|im_end|>"):
        assert all(tag not in text for text in texts)


CUSTOM_TEMPLATE = "{%- if custom_flag is defined %}FLAG={{ custom_flag }}{% endif %}"


async def test_chat_template_kwargs_reach_the_template(api_client, builtin_engine, monkeypatch):
    # The built-in template (Qwen3-Instruct-2507's) reads no kwargs; this one reads `custom_flag`.
    tokenizer = builtin_engine.tokenizer
    monkeypatch.setattr(tokenizer, "chat_template", CUSTOM_TEMPLATE + tokenizer.chat_template)
    prompts = []
    asubmit = builtin_engine.asubmit

    async def spy(request):
        stream = await asubmit(request)
        prompts.append(stream.prompt_text)
        return stream

    monkeypatch.setattr(builtin_engine, "asubmit", spy)
    plain = await chat(api_client, max_tokens=1)
    flagged = await chat(api_client, max_tokens=1, chat_template_kwargs={"custom_flag": "on"})
    assert "FLAG=" not in prompts[0] and prompts[1].startswith("FLAG=on<|im_start|>")
    assert flagged["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]


async def test_n_choices_render_the_chat_once_off_the_event_loop(api_client, builtin_engine,
                                                                  monkeypatch):
    tokenizer = builtin_engine.tokenizer
    render, threads = tokenizer.apply_chat_template, []

    def spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return render(*args, **kwargs)

    monkeypatch.setattr(tokenizer, "apply_chat_template", spy)
    body = await chat(api_client, n=3, max_tokens=2, seed=1)
    assert len(body["choices"]) == 3
    assert len(threads) == 1 and threads[0] is not threading.current_thread()


async def test_tiny_temperature_is_greedy_and_tiny_repetition_penalty_is_400(api_client):
    greedy = await chat(api_client, max_tokens=6, temperature=0)
    tiny = await chat(api_client, max_tokens=6, temperature=1e-45)
    assert tiny["choices"][0]["message"] == greedy["choices"][0]["message"]
    response = await api_client.post("/chat/completions", json={
        "messages": USER, "max_tokens": 4, "repetition_penalty": 1e-300})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "repetition_penalty" and "0.01" in error["message"]
    lowest = await chat(api_client, max_tokens=6, repetition_penalty=0.01, temperature=1.0, seed=1)
    assert lowest["choices"][0]["finish_reason"] in ("stop", "length")


async def test_logprobs_of_constrained_output_are_finite_and_exclude_the_end_token(api_client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    fields = {"max_tokens": 48, "seed": 1, "response_format": fmt, "logprobs": True,
              "top_logprobs": 3}
    body = await chat(api_client, **fields)
    events = await chat_stream(api_client, **fields)
    streamed = [item for event in events[:-1] for choice in event["choices"]
                for item in (choice.get("logprobs") or {}).get("content") or []]
    content = body["choices"][0]["logprobs"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert content and streamed == content
    # Exactly the tokens of the text: no logprob for the <|im_end|> that ended it.
    text = body["choices"][0]["message"]["content"]
    assert b"".join(bytes(item["bytes"]) for item in content).decode() == text
    for item in content:
        assert "<|im_end|>" not in item["token"]
        for entry in [item, *item["top_logprobs"]]:
            assert isinstance(entry["logprob"], float) and math.isfinite(entry["logprob"])
            assert entry["logprob"] <= 0


async def test_prompt_over_the_window_is_413_with_both_numbers(api_client, builtin_engine,
                                                               monkeypatch):
    monkeypatch.setattr(builtin_engine.settings, "max_context", 32)
    response = await api_client.post("/chat/completions", json={
        "messages": [{"role": "user", "content": "word " * 40}]})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "32" in error["message"] and str(error["message"]).count("tokens") >= 2


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER, "temperature": 3}, "temperature"),
        ({"messages": USER, "top_logprobs": 2}, "top_logprobs"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
            "url": "http://x/y.png"}}]}]}, "messages[0].content[0].type"),
        ({"messages": USER, "tools": TOOLS, "tool_choice": {"type": "function", "function": {
            "name": "nope"}}}, "tool_choice"),
        ({"messages": USER, "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "string", "format": "no-such-format"}}}},
         "response_format.json_schema.schema"),
        ({}, "messages"),
        ({"messages": USER, "tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "string"}}}]}, "tools[0].function.parameters"),
    ],
)
async def test_invalid_requests_are_400_naming_the_param(api_client, body, param):
    response = await api_client.post("/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


async def test_malformed_json_is_400(api_client):
    response = await api_client.post("/chat/completions", content=b'{"messages": [',
                                      headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["code"] == "invalid_json"


async def test_body_without_json_content_type_says_how_to_send_it(api_client):
    response = await api_client.post("/chat/completions", content=b'{"messages": []}',
                                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    assert "Content-Type: application/json" in response.json()["error"]["message"]
