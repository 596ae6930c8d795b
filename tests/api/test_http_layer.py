"""The HTTP layer itself: API key, 503 while loading or saturated, 500 for a failed generation (as
JSON and inside a stream), cleanup when a multi-choice request fails half-way, and the wire format
of reasoning, which the built-in model (random weights) never writes.

Loading and failed-to-load states use a real `Engine` that was never started. The rest uses
`ScriptedEngine`, a stand-in for the engine's interface: these tests are about how HTTP answers,
not about the model (the end-to-end tests provoke the same errors for real).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from api import create_api
from inference import Engine, EngineSettings
from inference.errors import EngineOverloadedError
from inference.types import GenerationChunk, GenerationResult, SamplingDefaults, Timings, Usage
from tests.api.conftest import asgi_client
from tests.api.events import collect_chat_stream, read_events
from tests.conftest import CACHE_DIR

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


class ScriptedStream:
    """A request stream that yields scripted chunks."""

    def __init__(self, chunks: list[GenerationChunk]):
        self.chunks = chunks
        self.request_id = "req"
        self.prompt_tokens = 3
        self.prompt_token_ids = [1, 2, 3]
        self.prompt_text: str | None = "prompt"
        self.max_tokens = 4
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    async def __aiter__(self):
        for chunk in self.chunks:
            yield chunk

    async def collect(self) -> GenerationResult:
        last = self.chunks[-1]
        return GenerationResult("req", "".join(c.text for c in self.chunks), [],
                                last.finish_reason, last.usage or Usage(3, 0),
                                last.timings or Timings(), error=last.error)


class ScriptedEngine:
    """The engine interface the API uses (`inference.interface.InferenceEngine`; a test keeps the
    two in step), answering from a script: each submit takes the next entry, a list of chunks (a
    stream) or an exception (raised by submit)."""

    state = "ready"
    error = None
    model_name = "scripted"
    started_at = 0.0
    is_fallback = False
    max_context = 4096
    defaults = SamplingDefaults()

    def __init__(self, *script: Any, prompt_text: str = "prompt"):
        self.script = list(script)
        self.prompt_text = prompt_text
        self.streams: list[ScriptedStream] = []
        self.requests: list[Any] = []

    @property
    def tokenizer(self):
        return None

    async def start(self) -> None:
        self.state = "ready"

    async def drain(self, timeout: float) -> None:
        self.state = "stopping"

    async def shutdown(self) -> None:
        self.state = "stopped"

    def submit(self, request) -> ScriptedStream:
        self.requests.append(request)
        entry = self.script.pop(0)
        if isinstance(entry, Exception):
            raise entry
        stream = ScriptedStream(entry)
        stream.prompt_text = self.prompt_text if request.messages is not None else None
        self.streams.append(stream)
        return stream

    async def asubmit(self, request) -> ScriptedStream:
        return self.submit(request)

    async def generate(self, request) -> GenerationResult:
        return await (await self.asubmit(request)).collect()

    def tokenize(self, request) -> list[int]:
        self.requests.append(request)
        return [1, 2, 3]

    def info(self) -> dict[str, Any]:
        return {"model": self.model_name, "builtin": False, "fallback": False, "quantization": {},
                "context_window": self.max_context, "max_context": self.max_context,
                "counters": {"active_requests": 0, "queue_depth": 0}}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model_loaded": True, "model": self.model_name, "uptime_s": 0.0,
                "queue_depth": 0, "active_requests": 0, "error": None}

    def add_listener(self, listener) -> Any:
        return lambda: None  # scripted streams finish without the engine: nothing to report


def failing_stream() -> list[GenerationChunk]:
    return [GenerationChunk("req", "partial", [1]),
            GenerationChunk("req", "", [], finish_reason="error", usage=Usage(3, 1),
                            error="RuntimeError: CUDA error: device-side assert")]


def good_stream() -> list[GenerationChunk]:
    return [GenerationChunk("req", "ok", [1], finish_reason="stop", usage=Usage(3, 1))]


async def post(engine, path: str, body: dict, **headers: str):
    async with asgi_client(create_api(engine)) as client:
        return await client.post(path, json=body, headers=headers)


@pytest.fixture
def unstarted_engine():
    return Engine(EngineSettings(model="builtin"))


@pytest.mark.parametrize("path", ["/chat/completions", "/generate"])
async def test_503_while_loading_with_retry_after(unstarted_engine, path):
    body = CHAT if path == "/chat/completions" else {"prompt": "hi"}
    response = await post(unstarted_engine, path, body)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "model_not_loaded"


async def test_health_and_info_while_loading(unstarted_engine):
    async with asgi_client(create_api(unstarted_engine)) as client:
        health = await client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        assert health.headers["retry-after"]
        info = await client.get("/model/info")
        assert info.status_code == 500
        assert info.json()["error"]["code"] == "model_not_loaded"


async def test_failed_load_is_503_with_the_reason(unstarted_engine):
    unstarted_engine.state, unstarted_engine.error = "error", "no such model: foo/bar"
    async with asgi_client(create_api(unstarted_engine)) as client:
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "error" and "foo/bar" in health.json()["error"]
        chat = await client.post("/chat/completions", json=CHAT)
        assert chat.status_code == 503 and "foo/bar" in chat.json()["error"]["message"]


async def test_api_key(builtin_engine):
    async with asgi_client(create_api(builtin_engine, api_key="s3cret")) as client:
        missing = await client.get("/models")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_api_key"
        wrong = await client.get("/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        chat = await client.post("/chat/completions", json=CHAT)
        assert chat.status_code == 401
        right = await client.get("/models", headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200
        assert (await client.get("/health")).status_code == 200


async def test_overloaded_is_503_with_retry_after():
    engine = ScriptedEngine(EngineOverloadedError(64, 64, retry_after=2))
    response = await post(engine, "/chat/completions", CHAT)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"]["code"] == "server_overloaded"


async def test_second_choice_overloaded_cancels_the_first():
    engine = ScriptedEngine(good_stream(), EngineOverloadedError(1, 0))
    response = await post(engine, "/chat/completions", {**CHAT, "n": 2})
    assert response.status_code == 503
    assert engine.streams[0].cancelled


@pytest.mark.parametrize("path", ["/chat/completions", "/generate"])
async def test_failed_generation_is_500_for_that_request_only(path):
    body = CHAT if path == "/chat/completions" else {"prompt": "hi"}
    engine = ScriptedEngine(failing_stream(), good_stream())
    async with asgi_client(create_api(engine)) as client:
        failed = await client.post(path, json=body)
        assert failed.status_code == 500
        error = failed.json()["error"]
        assert error["type"] == "server_error" and "device-side assert" in error["message"]
        assert (await client.post(path, json=body)).status_code == 200


@pytest.mark.parametrize("path", ["/chat/completions", "/generate"])
async def test_failed_generation_inside_a_stream_is_an_error_event_then_done(path):
    body = CHAT if path == "/chat/completions" else {"prompt": "hi"}
    engine = ScriptedEngine(failing_stream())
    response = await post(engine, path, {**body, "stream": True})
    assert response.status_code == 200
    events = read_events(response.text)
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert error["type"] == "server_error" and error["code"] == "generation_failed"
    assert set(error) == {"message", "type", "param", "code"}
    assert engine.streams[0].cancelled  # the stream's cleanup ran


def thinking_stream() -> list[GenerationChunk]:
    pieces = ["<think>", "\nThe user", " wants a call.\n", "</think>", "\n\nSure.", "\n<tool_call>",
              '\n{"name": "get_time", ', '"arguments": {"tz": "UTC"}}', "\n</tool_call>"]
    chunks = [GenerationChunk("req", piece, [i]) for i, piece in enumerate(pieces)]
    chunks.append(GenerationChunk("req", "", [], finish_reason="stop", usage=Usage(3, 9)))
    return chunks


async def test_reasoning_and_tool_calls_split_the_same_way_in_both_modes():
    tools = [{"type": "function", "function": {"name": "get_time"}}]
    body = {**CHAT, "tools": tools}
    engine = ScriptedEngine(thinking_stream(), thinking_stream())
    async with asgi_client(create_api(engine)) as client:
        plain = (await client.post("/chat/completions", json=body)).json()["choices"][0]
        response = await client.post("/chat/completions", json={**body, "stream": True})
    message = plain["message"]
    assert message["reasoning_content"] == "The user wants a call."
    assert message["content"] == "Sure."
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]] == [
        ("get_time", '{"tz": "UTC"}')]
    assert plain["finish_reason"] == "tool_calls"
    streamed = collect_chat_stream(read_events(response.text))[0]
    assert streamed["reasoning"] == message["reasoning_content"]
    assert streamed["content"] == message["content"]
    assert [(c["name"], c["arguments"]) for c in streamed["tool_calls"].values()] == [
        ("get_time", '{"tz": "UTC"}')]
    assert streamed["finish"] == "tool_calls"


async def test_thinking_template_starts_inside_reasoning():
    engine = ScriptedEngine([GenerationChunk("req", "hmm\n</think>\n\nHello", [1]),
                             GenerationChunk("req", "", [], finish_reason="stop",
                                             usage=Usage(3, 1))],
                            prompt_text="<|im_start|>assistant\n<think>\n")
    message = (await post(engine, "/chat/completions", CHAT)).json()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Hello", "reasoning_content": "hmm",
                       "refusal": None}


def cancelled_stream() -> list[GenerationChunk]:
    return [GenerationChunk("req", "partial", [1]),
            GenerationChunk("req", "", [], finish_reason="cancelled", usage=Usage(3, 1),
                            error="the server is shutting down")]


@pytest.mark.parametrize("path", ["/chat/completions", "/generate"])
async def test_a_generation_the_server_cancelled_is_503_not_a_stop(path):
    body = CHAT if path == "/chat/completions" else {"prompt": "hi"}
    engine = ScriptedEngine(cancelled_stream(), cancelled_stream())
    async with asgi_client(create_api(engine)) as client:
        plain = await client.post(path, json=body)
        streamed = await client.post(path, json={**body, "stream": True})
    assert plain.status_code == 503 and int(plain.headers["retry-after"]) > 0
    error = plain.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "server_shutting_down"
    assert "shutting down" in error["message"]
    events = read_events(streamed.text)
    assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "server_shutting_down"
    assert not any(e.get("finish_reason") or any(c.get("finish_reason") for c in e.get("choices", []))
                   for e in events[:-2])


async def test_shutting_down_mid_request_is_503(builtin_dir):
    engine = Engine(EngineSettings(model="builtin", cache_dir=CACHE_DIR))
    await engine.start()
    async with asgi_client(create_api(engine)) as client:
        request = asyncio.create_task(client.post("/chat/completions", json={
            "messages": CHAT["messages"], "max_tokens": 100_000, "top_k": 0}))
        while not engine.active_count:
            assert not request.done(), (await request).text
            await asyncio.sleep(0.01)
        await engine.shutdown()
        response = await asyncio.wait_for(request, 30)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "server_shutting_down"


async def test_a_call_parsed_whole_streams_its_header_before_its_arguments():
    pieces = ['<tool_call>\n{"arguments": {"tz": "UTC"}, ', '"name": "get_time"}\n</tool_call>']
    chunks = [GenerationChunk("req", piece, [i]) for i, piece in enumerate(pieces)]
    chunks.append(GenerationChunk("req", "", [], finish_reason="stop", usage=Usage(3, 2)))
    engine = ScriptedEngine(chunks)
    tools = [{"type": "function", "function": {"name": "get_time"}}]
    response = await post(engine, "/chat/completions", {**CHAT, "tools": tools, "stream": True})
    calls = [call for event in read_events(response.text)[:-1] for choice in event["choices"]
             for call in choice["delta"].get("tool_calls") or []]
    assert calls[0] == {"index": 0, "id": calls[0]["id"], "type": "function",
                        "function": {"name": "get_time", "arguments": ""}}
    assert calls[1:] == [{"index": 0, "function": {"arguments": '{"tz": "UTC"}'}}]


async def test_choices_after_the_first_are_submitted_as_its_prompt_tokens():
    engine = ScriptedEngine(good_stream(), good_stream(), good_stream())
    response = await post(engine, "/chat/completions", {**CHAT, "n": 3, "seed": 5})
    assert response.status_code == 200
    first, *others = engine.requests
    assert first.messages is not None and first.prompt_token_ids is None
    assert all(r.messages is None and r.prompt_token_ids == [1, 2, 3] for r in others)
    assert [r.sampling.seed for r in engine.requests] == [5, 6, 7]  # same sampling, seed + i
