"""Request ids and the request log, on the built-in model: `X-Request-Id` on every answer (success,
errors, streams; a valid incoming id echoed), one `nf4serve.requests` line per request with its
tokens, time to first token and outcome, and a client that leaves logged as cancelled at INFO,
without a traceback."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import time

import pytest

from api import create_api
from logs import JSONFormatter
from tests.api.conftest import asgi_client
from tests.api.test_http_layer import ScriptedEngine

NEW_ID = re.compile(r"[0-9a-f]{32}")
USER = [{"role": "user", "content": "Say hi"}]
CHAT = {"messages": USER, "max_tokens": 4, "seed": 3}


def request_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "nf4serve.requests"]


@pytest.fixture
def request_log(caplog):
    caplog.set_level(logging.DEBUG, logger="nf4serve.requests")
    return caplog


@pytest.mark.parametrize("method, path, body, status", [
    ("POST", "/chat/completions", CHAT, 200),
    ("POST", "/chat/completions", {**CHAT, "stream": True}, 200),
    ("POST", "/generate", {"prompt": "Hi", "max_tokens": 2, "stream": True}, 200),
    ("POST", "/chat/completions", {"messages": "not a list"}, 400),
    ("GET", "/models/other", None, 404),
    ("GET", "/no/such/route", None, 404),
    ("GET", "/health", None, 200),
], ids=["chat", "chat-stream", "generate-stream", "400", "404-model", "404-route",
        "health"])
async def test_every_answer_has_a_new_request_id(api_client, method, path, body, status):
    response = await api_client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert NEW_ID.fullmatch(response.headers["x-request-id"])


async def test_ids_are_unique(api_client):
    ids = {(await api_client.get("/health")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize("given", ["client-42.retry_1", "A" * 128, "0"])
async def test_a_valid_incoming_id_is_echoed(api_client, given):
    response = await api_client.post("/chat/completions", json=CHAT, headers={"X-Request-Id": given})
    assert response.headers["x-request-id"] == given
    error = await api_client.post("/chat/completions", json={}, headers={"X-Request-Id": given})
    assert error.status_code == 400 and error.headers["x-request-id"] == given


@pytest.mark.parametrize("given", ["A" * 129, "has space", "semi;colon", "", "quote\""])
async def test_an_invalid_incoming_id_is_replaced(api_client, given):
    response = await api_client.get("/health", headers={"X-Request-Id": given})
    assert NEW_ID.fullmatch(response.headers["x-request-id"])


async def test_401_413_and_an_unexpected_500_have_ids_too(builtin_engine, request_log):
    async with asgi_client(create_api(builtin_engine, api_key="k", max_body_bytes=256)) as client:
        missing_key = await client.post("/chat/completions", json=CHAT)
        assert missing_key.status_code == 401 and NEW_ID.fullmatch(missing_key.headers["x-request-id"])
        too_large = await client.post("/chat/completions", json={"messages": [
            {"role": "user", "content": "x" * 1000}]}, headers={"Authorization": "Bearer k"})
        assert too_large.status_code == 413 and NEW_ID.fullmatch(too_large.headers["x-request-id"])
    # An exception no handler expects: still OpenAI's body, with the id, and logged at WARNING.
    async with asgi_client(create_api(ScriptedEngine(RuntimeError("boom")))) as client:
        broken = await client.post("/chat/completions", json=CHAT, headers={"X-Request-Id": "r-500"})
    assert broken.status_code == 500 and broken.headers["x-request-id"] == "r-500"
    assert broken.json()["error"]["type"] == "server_error"
    line = request_lines(request_log)[-1]
    assert (line.request_id, line.status, line.levelno) == ("r-500", 500, logging.WARNING)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_one_log_line_per_request_with_tokens_and_outcome(api_client, request_log, stream):
    body = {**CHAT, "n": 2, "stream": stream, "stream_options": {"include_usage": True}}
    if not stream:
        del body["stream_options"]
    response = await api_client.post("/chat/completions", json=body)
    assert response.status_code == 200
    if stream:
        events = [json.loads(line[6:]) for line in response.text.splitlines()
                  if line.startswith("data: {")]
        usage = events[-1]["usage"]
        reasons = {c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]}
    else:
        usage = response.json()["usage"]
        reasons = {c["finish_reason"] for c in response.json()["choices"]}
    [line] = request_lines(request_log)
    assert line.levelno == logging.INFO
    assert line.request_id == response.headers["x-request-id"]
    assert (line.method, line.route, line.status) == ("POST", "/chat/completions", 200)
    assert line.prompt_tokens == usage["prompt_tokens"]
    assert line.completion_tokens == usage["completion_tokens"]
    assert set(line.finish_reason.split(",")) == reasons  # no tools: the engine's own reasons
    assert 0 < line.time_to_first_token_s <= line.total_s
    assert line.request_id in line.getMessage() and "completion_tokens=" in line.getMessage()


async def test_concurrent_requests_each_log_their_own_tokens(api_client, request_log):
    sizes = (2, 7)
    responses = await asyncio.gather(*(
        api_client.post("/generate", json={"prompt": "Count:", "max_tokens": n, "seed": n},
                        headers={"X-Request-Id": f"concurrent-{n}"}) for n in sizes))
    lines = {line.request_id: line for line in request_lines(request_log)}
    for n, response in zip(sizes, responses, strict=True):
        line = lines[f"concurrent-{n}"]
        assert line.completion_tokens == response.json()["usage"]["completion_tokens"]
        assert line.finish_reason == response.json()["finish_reason"]


async def test_a_request_without_generation_logs_no_tokens(api_client, request_log):
    await api_client.get("/models")
    await api_client.get("/health")
    models, health = request_lines(request_log)
    assert models.levelno == logging.INFO and models.status == 200
    assert models.prompt_tokens is None and models.finish_reason is None
    assert health.levelno == logging.DEBUG  # probes stay out of an INFO log


async def test_the_log_line_as_json(api_client, request_log):
    response = await api_client.post("/generate", json={"prompt": "Hi", "max_tokens": 3})
    [line] = request_lines(request_log)
    entry = json.loads(JSONFormatter().format(line))
    assert entry["logger"] == "nf4serve.requests" and entry["level"] == "INFO"
    assert entry["request_id"] == response.headers["x-request-id"]
    assert entry["completion_tokens"] == response.json()["usage"]["completion_tokens"]
    assert {"ts", "message", "route", "status", "prompt_tokens", "finish_reason",
            "time_to_first_token_s", "total_s"} <= set(entry)


async def test_a_client_that_leaves_is_logged_as_cancelled_at_info(builtin_engine, caplog):
    """Drives the app over ASGI: the client sends its request, then disconnects mid-generation."""
    caplog.set_level(logging.INFO)
    app = create_api(builtin_engine)
    body = json.dumps({"messages": USER, "max_tokens": 100_000, "top_k": 0}).encode()
    gone, messages = asyncio.Event(), [{"type": "http.request", "body": body}]

    async def receive():
        if messages:
            return messages.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        pass

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
             "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/chat/completions", "raw_path": b"/chat/completions", "root_path": "",
             "query_string": b"", "client": ("127.0.0.1", 5000), "server": ("api", 80),
             "headers": [(b"content-type", b"application/json"), (b"x-request-id", b"leaver")]}
    served = asyncio.create_task(app(scope, receive, send))
    await until(lambda: builtin_engine.active_count > 0, "the request never started")
    gone.set()
    await asyncio.wait_for(served, 30)
    await until(lambda: builtin_engine.active_count == 0, "the engine still decodes for nobody")
    del served
    gc.collect()  # an unretrieved exception is reported when its future is collected
    await asyncio.sleep(0.1)
    [line] = [r for r in request_lines(caplog) if r.request_id == "leaver"]
    assert (line.levelno, line.status, line.finish_reason) == (logging.INFO, 499, "cancelled")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def until(condition, message: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.02)
