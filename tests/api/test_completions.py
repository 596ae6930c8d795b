"""POST /completions (OpenAI's legacy Completions) on the built-in model: string, list and token-id
prompts, `n`, `echo`, logprobs, streaming that matches the JSON answer, and the 400s."""

from __future__ import annotations

import pytest

from tests.api.events import read_events

GREEDY = {"temperature": 0, "max_tokens": 6}


async def complete(api_client, **body):
    response = await api_client.post("/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_string_prompt(api_client, builtin_engine):
    body = await complete(api_client, prompt="Once upon a time", max_tokens=5, seed=3)
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert body["model"] == builtin_engine.model_name and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and isinstance(choice["text"], str)
    assert choice["finish_reason"] in ("stop", "length") and choice["logprobs"] is None
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(builtin_engine.tokenizer.encode("Once upon a time"))
    assert 1 <= usage["completion_tokens"] <= 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_max_tokens_defaults_to_16_as_openai(api_client):
    body = await complete(api_client, prompt="The", temperature=0)
    assert body["usage"]["completion_tokens"] <= 16


async def test_a_token_id_prompt_is_the_same_prompt(api_client, builtin_tokenizer):
    ids = builtin_tokenizer.encode("The sea is", add_special_tokens=False)
    text = await complete(api_client, prompt="The sea is", **GREEDY)
    tokens = await complete(api_client, prompt=ids, **GREEDY)
    assert tokens["choices"][0]["text"] == text["choices"][0]["text"]
    assert tokens["usage"] == text["usage"]


async def test_a_list_of_prompts_with_n_choices_each(api_client, builtin_tokenizer):
    prompts = ["The sea is", "Mountains are"]
    body = await complete(api_client, prompt=prompts, n=2, seed=7, temperature=1.0, max_tokens=4)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]  # prompt * n + choice
    alone = [await complete(api_client, prompt=p, seed=7, temperature=1.0, max_tokens=4)
             for p in prompts]
    # A prompt's choices do not depend on the other prompts of the batch.
    assert body["choices"][0]["text"] == alone[0]["choices"][0]["text"]
    assert body["choices"][2]["text"] == alone[1]["choices"][0]["text"]
    assert body["usage"]["prompt_tokens"] == sum(
        len(builtin_tokenizer.encode(p)) for p in prompts)
    assert body["usage"]["completion_tokens"] <= 4 * 4


async def test_a_list_of_token_id_prompts(api_client, builtin_tokenizer):
    ids = [builtin_tokenizer.encode(p) for p in ("Hello", "The sea is")]
    body = await complete(api_client, prompt=ids, **GREEDY)
    assert len(body["choices"]) == 2
    assert body["usage"]["prompt_tokens"] == len(ids[0]) + len(ids[1])


async def test_echo_puts_the_prompt_first(api_client, builtin_tokenizer):
    plain = await complete(api_client, prompt="The sea is", **GREEDY)
    echoed = await complete(api_client, prompt="The sea is", echo=True, **GREEDY)
    assert echoed["choices"][0]["text"] == "The sea is" + plain["choices"][0]["text"]
    ids = builtin_tokenizer.encode("Grüße aus Köln")
    from_ids = await complete(api_client, prompt=ids, echo=True, **GREEDY)
    assert from_ids["choices"][0]["text"].startswith("Grüße aus Köln")


async def test_logprobs_in_the_legacy_shape(api_client):
    body = await complete(api_client, prompt="The", max_tokens=5, logprobs=2, seed=1,
                          temperature=1.0)
    choice = body["choices"][0]
    logprobs = choice["logprobs"]
    count = len(logprobs["tokens"])
    assert 1 <= count <= body["usage"]["completion_tokens"]
    assert len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) == count
    assert len(logprobs["text_offset"]) == count and logprobs["text_offset"][0] == 0
    assert logprobs["text_offset"] == sorted(logprobs["text_offset"])
    for token, value, top in zip(logprobs["tokens"], logprobs["token_logprobs"],
                                 logprobs["top_logprobs"], strict=True):
        assert value <= 0 and top[token] == value and len(top) <= 3  # the 2 likeliest + chosen


async def test_streaming_matches_the_json_answer(api_client):
    request = {"prompt": ["The", "A sea"], "n": 2, "max_tokens": 6, "seed": 5,
               "temperature": 1.0, "echo": True}
    whole = await complete(api_client, **request)
    response = await api_client.post("/completions", json={
        **request, "stream": True, "stream_options": {"include_usage": True}})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = read_events(response.text)
    assert events[-1] == "[DONE]"
    *chunks, usage = events[:-1]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in chunks:
        assert chunk["object"] == "text_completion" and chunk["id"].startswith("cmpl-")
        (choice,) = chunk["choices"]
        assert choice["index"] not in finishes, "nothing after a choice's finish"
        if not texts.get(choice["index"]):  # the echo comes first
            assert choice["text"] in ("The", "A sea")
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
        if choice["finish_reason"]:
            finishes[choice["index"]] = choice["finish_reason"]
    assert [texts[c["index"]] for c in whole["choices"]] == [c["text"] for c in whole["choices"]]
    assert [finishes[c["index"]] for c in whole["choices"]] == [
        c["finish_reason"] for c in whole["choices"]]


async def test_streamed_logprobs_carry_offsets_into_the_text(api_client):
    response = await api_client.post("/completions", json={
        "prompt": "The", "max_tokens": 4, "logprobs": 0, "seed": 2, "stream": True})
    chunks = [e for e in read_events(response.text) if e != "[DONE]"]
    offsets = [o for c in chunks for o in (c["choices"][0]["logprobs"] or {}).get("text_offset", [])]
    assert offsets and offsets[0] == 0 and offsets == sorted(offsets)


async def test_prompt_over_the_window_is_413(api_client, builtin_engine, monkeypatch):
    monkeypatch.setattr(builtin_engine.settings, "max_context", 16)
    response = await api_client.post("/completions", json={"prompt": "word " * 40})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"


@pytest.mark.parametrize("body, param", [
    ({"prompt": "x", "suffix": "y"}, "suffix"),
    ({"prompt": "x", "echo": True, "logprobs": 1}, "echo"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [[]]}, "prompt"),
    ({"prompt": ["x"] * 65}, "prompt"),
    ({"prompt": [10**7]}, "prompt"),
    ({"prompt": [-1]}, "prompt[0]"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "x", "best_of": 3}, "best_of"),
    ({"prompt": "x", "n": 9}, "n"),
    ({"prompt": "x", "logprobs": 21}, "logprobs"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({}, "prompt"),
])
async def test_invalid_requests_are_400(api_client, body, param):
    response = await api_client.post("/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["type"] == "invalid_request_error"


async def test_an_empty_suffix_and_best_of_n_are_accepted(api_client):
    await complete(api_client, prompt="x", suffix="", best_of=2, n=2, max_tokens=2)
