"""POST /generate: raw-text completion as JSON and as Server-Sent Events, on the built-in model."""

from __future__ import annotations

import threading

from tests.api.events import read_events


async def test_json_response(api_client, builtin_engine):
    response = await api_client.post("/generate", json={"prompt": "Once upon a time",
                                                        "max_tokens": 7, "seed": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("gen-") and body["object"] == "generation"
    assert body["model"] == builtin_engine.model_name and isinstance(body["created"], int)
    assert isinstance(body["text"], str) and body["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(builtin_engine.tokenizer.encode("Once upon a time"))
    assert 1 <= usage["completion_tokens"] <= 7
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    timings = body["timings"]
    assert set(timings) == {"queue", "time_to_first_token", "total", "tokens_per_second"}
    assert 0 <= timings["time_to_first_token"] <= timings["total"]


async def test_stream_matches_json_for_the_same_seed(api_client):
    request = {"prompt": "The", "max_tokens": 9, "seed": 21, "temperature": 1.2, "top_k": 0}
    whole = (await api_client.post("/generate", json=request)).json()
    response = await api_client.post("/generate", json={**request, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = read_events(response.text)
    assert events[-1] == "[DONE]"
    *deltas, last = events[:-1]
    assert all(e["object"] == "generation.chunk" and "finish_reason" not in e for e in deltas)
    assert all(e["text"] for e in deltas)
    assert last["finish_reason"] == whole["finish_reason"]
    assert last["usage"] == whole["usage"]
    assert set(last["timings"]) == set(whole["timings"])
    assert "".join(e["text"] for e in events[:-1]) == whole["text"]
    assert len({e["id"] for e in events[:-1]}) == 1


async def test_stop_and_max_tokens(api_client):
    whole = (await api_client.post("/generate", json={
        "prompt": "A", "max_tokens": 16, "seed": 4, "temperature": 1.0})).json()
    assert whole["usage"]["completion_tokens"] <= 16
    text = whole["text"]
    stop = text[len(text) // 2]
    cut = (await api_client.post("/generate", json={
        "prompt": "A", "max_tokens": 16, "seed": 4, "temperature": 1.0, "stop": stop})).json()
    assert cut["text"] == text[: text.index(stop)] and cut["finish_reason"] == "stop"


async def test_every_sampling_parameter_is_accepted(api_client):
    response = await api_client.post("/generate", json={
        "prompt": "x", "max_tokens": 3, "temperature": 0.5, "top_p": 0.9, "top_k": 5, "min_p": 0.05,
        "repetition_penalty": 1.2, "stop": ["a", "b"], "seed": 9, "extra": "ignored"})
    assert response.status_code == 200, response.text


async def test_prompt_over_the_window_is_413(api_client, builtin_engine, monkeypatch):
    monkeypatch.setattr(builtin_engine.settings, "max_context", 16)
    response = await api_client.post("/generate", json={"prompt": "word " * 40})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
    assert "16" in error["message"]


async def test_invalid_parameters_are_400(api_client):
    for body, param in [({"prompt": ""}, "prompt"), ({"prompt": "x", "top_p": 1.5}, "top_p"),
                        ({"prompt": "x", "max_tokens": 0}, "max_tokens"), ({}, "prompt")]:
        response = await api_client.post("/generate", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["param"] == param


async def test_prompt_is_tokenized_off_the_event_loop(api_client, builtin_engine, monkeypatch):
    tokenizer = builtin_engine.tokenizer
    encode, threads = tokenizer.encode, []

    def spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return encode(*args, **kwargs)

    monkeypatch.setattr(tokenizer, "encode", spy)
    response = await api_client.post("/generate", json={"prompt": "Once", "max_tokens": 2})
    assert response.status_code == 200
    assert threads and threading.current_thread() not in threads


async def test_extreme_sampling_values_never_500(api_client):
    greedy = await api_client.post("/generate", json={"prompt": "The", "max_tokens": 6,
                                                      "temperature": 0})
    tiny = await api_client.post("/generate", json={"prompt": "The", "max_tokens": 6,
                                                    "temperature": 1e-45})
    assert tiny.status_code == 200 and tiny.json()["text"] == greedy.json()["text"]
    rejected = await api_client.post("/generate", json={"prompt": "The",
                                                        "repetition_penalty": 1e-300})
    assert rejected.status_code == 400
    assert rejected.json()["error"]["param"] == "repetition_penalty"
    lowest = await api_client.post("/generate", json={"prompt": "The", "max_tokens": 6, "seed": 1,
                                                      "temperature": 1.0, "repetition_penalty": 0.01})
    assert lowest.status_code == 200, lowest.text
