"""Bounded work per request, over HTTP on the built-in model: a 10 MiB prompt is a quick 413 that
leaves memory where it was; wrong types are 400s, not coerced (OpenAI's `invalid_type`); so are a
lone surrogate, a schema that only refers to itself and `max_tokens` beyond the window. The lone
surrogate also runs against a live server: its keep-alive connection must stay usable."""

from __future__ import annotations

import gc
import http.client
import json
import random
import string
import threading
import time

import psutil
import pytest

from tests.e2e.conftest import start_server, stop_server

USER = [{"role": "user", "content": "hi"}]
MiB = 1024 * 1024
WINDOW = 262_144  # the built-in model's window


def assert_error(response, status: int, param: str | None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


@pytest.fixture(scope="module")
def ten_mib_text() -> str:
    """10 MiB of English-like words: some 2.7 M tokens, ten times the window."""
    rng = random.Random(9)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 10)))
             for _ in range(20_000)]
    return " ".join(rng.choices(words, k=2 * MiB))[:10 * MiB]


class PeakRSS:
    """The process's resident memory, sampled every 5 ms while the block runs."""

    def __init__(self):
        self.process = psutil.Process()
        self.peak = 0

    def _sample(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRSS:
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def rss_after_gc() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


@pytest.mark.parametrize("path", ["/chat/completions", "/generate"])
async def test_a_10_mib_prompt_is_a_413_counted_in_part_and_memory_comes_back(api_client,
                                                                             ten_mib_text, path):
    body = ({"messages": [{"role": "user", "content": ten_mib_text}], "max_tokens": 4}
            if path == "/chat/completions" else {"prompt": ten_mib_text, "max_tokens": 4})
    payload = json.dumps(body).encode()
    assert 10 * MiB < len(payload) < 16 * MiB  # under the body cap: the engine must refuse it
    warm = await api_client.post(path, json={"prompt": "hi", "messages": USER, "max_tokens": 1})
    assert warm.status_code == 200, warm.text
    baseline = rss_after_gc()
    with PeakRSS() as rss:
        response = await api_client.post(path, content=payload,
                                         headers={"Content-Type": "application/json"})
    error = assert_error(response, 413, "messages" if "chat" in path else "prompt",
                         "context_length_exceeded")
    # "at least": the engine stopped counting once the window was passed, not tokenizing it all.
    assert "at least" in error["message"] and str(WINDOW) in error["message"]
    del response
    after = rss_after_gc()
    assert after - baseline < 100 * MiB, f"RSS stayed {(after - baseline) / MiB:.0f} MiB up"
    assert rss.peak - baseline < 400 * MiB, f"RSS peaked {(rss.peak - baseline) / MiB:.0f} MiB up"


STRICT_CASES = [
    ("/chat/completions", {"stream": "yes"}, "stream", "a boolean", "a string"),
    ("/chat/completions", {"max_tokens": "4"}, "max_tokens", "an integer", "a string"),
    ("/chat/completions", {"n": "2"}, "n", "an integer", "a string"),
    ("/chat/completions", {"logprobs": "yes"}, "logprobs", "a boolean", "a string"),
    ("/chat/completions", {"logprobs": 1}, "logprobs", "a boolean", "an integer"),
    ("/chat/completions", {"max_tokens": 4.5}, "max_tokens", "an integer", "a decimal number"),
    ("/chat/completions", {"temperature": "0.5"}, "temperature", "a number", "a string"),
    ("/chat/completions", {"temperature": True}, "temperature", "a number", "a boolean"),
    ("/chat/completions", {"seed": "7"}, "seed", "an integer", "a string"),
    ("/chat/completions", {"parallel_tool_calls": "no"}, "parallel_tool_calls", "a boolean",
     "a string"),
    ("/chat/completions", {"stream": True, "stream_options": {"include_usage": "yes"}},
     "stream_options.include_usage", "a boolean", "a string"),
    ("/generate", {"stream": "yes"}, "stream", "a boolean", "a string"),
    ("/generate", {"max_tokens": "4"}, "max_tokens", "an integer", "a string"),
    ("/generate", {"top_k": 2.0}, "top_k", "an integer", "a decimal number"),
]


@pytest.mark.parametrize(("path", "fields", "param", "expected", "got"), STRICT_CASES)
async def test_a_value_of_the_wrong_type_is_refused_not_coerced(api_client, path, fields, param,
                                                               expected, got):
    base = {"messages": USER} if path == "/chat/completions" else {"prompt": "hi"}
    response = await api_client.post(path, json={**base, "max_tokens": 2, **fields})
    error = assert_error(response, 400, param, "invalid_type")
    assert error["message"].startswith(
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.")


async def test_integers_are_numbers(api_client):
    # OpenAI takes `temperature: 1`; so does every number field here.
    fields = {"temperature": 1, "top_p": 1, "min_p": 0, "presence_penalty": 0,
              "frequency_penalty": 1, "repetition_penalty": 1, "max_tokens": 2}
    response = await api_client.post("/chat/completions", json={"messages": USER, **fields})
    assert response.status_code == 200, response.text
    generate = await api_client.post("/generate", json={"prompt": "hi", "temperature": 0,
                                                        "top_p": 1, "max_tokens": 2})
    assert generate.status_code == 200, generate.text


@pytest.mark.parametrize("path", ["/chat/completions", "/generate"])
@pytest.mark.parametrize("max_tokens", [WINDOW + 1, 2**70])
async def test_max_tokens_beyond_the_window_is_a_400(api_client, path, max_tokens):
    base = {"messages": USER} if path == "/chat/completions" else {"prompt": "hi"}
    response = await api_client.post(path, json={**base, "max_tokens": max_tokens})
    error = assert_error(response, 400, "max_tokens")
    assert str(WINDOW) in error["message"] and str(max_tokens) in error["message"]
    completion = await api_client.post("/chat/completions", json={
        "messages": USER, "max_completion_tokens": max_tokens, "stream": True})
    assert_error(completion, 400, "max_tokens")


SELF_REFERENCING = [
    {"$ref": "#"},
    {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    {"allOf": [{"$ref": "#"}]},
]


@pytest.mark.parametrize("schema", SELF_REFERENCING)
@pytest.mark.parametrize("stream", [False, True])
async def test_a_self_referencing_schema_is_a_400(api_client, schema, stream):
    response = await api_client.post("/chat/completions", json={
        "messages": USER, "max_tokens": 8, "stream": stream,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    error = assert_error(response, 400, "response_format.json_schema.schema")
    assert "response_format" in error["message"] and "refers to itself" in error["message"]
    assert "<state>" not in error["message"] and "llguidance" not in error["message"]


async def test_a_recursive_schema_that_can_end_is_served(api_client):
    tree = {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"},
                                                          "maxItems": 2}}}
    response = await api_client.post("/chat/completions", json={
        "messages": USER, "max_tokens": 8,
        "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": tree}}})
    assert response.status_code == 200, response.text


async def test_a_schema_nested_too_deeply_is_a_400(api_client):
    schema: dict = {"type": "string"}
    for _ in range(450):
        schema = {"type": "object", "properties": {"a": schema}}
    response = await api_client.post("/chat/completions", json={
        "messages": USER, "max_tokens": 2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "d", "schema": schema}}})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


LONE_SURROGATE_CHAT = (b'{"messages": [{"role": "user", "content": "a\\ud800"}], "max_tokens": 2}')


async def test_a_lone_surrogate_is_a_400(api_client):
    response = await api_client.post("/chat/completions", content=LONE_SURROGATE_CHAT,
                                     headers={"Content-Type": "application/json"})
    error = assert_error(response, 400, "messages")
    assert "messages[0].content" in error["message"] and "surrogate" in error["message"]
    for body, param in ((b'{"messages": [{"role": "user", "content": [{"type": "text", '
                         b'"text": "\\udfff"}]}], "max_tokens": 2}', "messages"),
                        (b'{"prompt": "a\\ud800", "max_tokens": 2}', "prompt")):
        path = "/generate" if param == "prompt" else "/chat/completions"
        response = await api_client.post(path, content=body,
                                         headers={"Content-Type": "application/json"})
        assert_error(response, 400, param)


# -- on a live server: one keep-alive connection --------------------------------------------------

@pytest.fixture(scope="module")
def live_api(builtin_dir):
    proc, base = start_server("--model", "builtin", "--no-fallback")
    yield base.removeprefix("http://")
    stop_server(proc)


def post(connection: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, dict, dict]:
    connection.request("POST", "/api/v1" + path, body=body,
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), json.loads(response.read())


@pytest.mark.parametrize("body", [LONE_SURROGATE_CHAT,
                                  json.dumps({"messages": USER, "stream": "yes"}).encode(),
                                  json.dumps({"messages": USER, "response_format": {
                                      "type": "json_schema", "json_schema": {
                                          "name": "x", "schema": {"$ref": "#"}}}}).encode()])
def test_the_connection_stays_usable_after_a_400(live_api, body):
    connection = http.client.HTTPConnection(live_api, timeout=60)
    try:
        status, headers, answer = post(connection, "/chat/completions", body)
        assert status == 400 and answer["error"]["type"] == "invalid_request_error", answer
        assert headers.get("connection", "").lower() != "close"
        socket = connection.sock
        time.sleep(0.3)  # a server that drops the connection has done so by now
        status, _, answer = post(connection, "/chat/completions",
                                 json.dumps({"messages": USER, "max_tokens": 2}).encode())
        assert status == 200, answer
        assert connection.sock is socket  # the same connection, not a new one
    finally:
        connection.close()
