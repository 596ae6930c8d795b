"""End to end: a live uvicorn server, the official `openai` client (and httpx for `/generate` and raw
error bodies), the built-in model. Nothing is mocked.

Most tests use `live_server` (`python app.py --model builtin`, the product as users start it). The
errors that need a particular server state use `tight_server`, an in-process uvicorn serving the API
with an API key, room for one request at a time, a small context window, and a second API on an
engine that never finished loading. The 500 test makes a real grammar-constrained generation fail
mid-request with a logits processor that breaks after the first token; the model and the server
are the real ones.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from contextlib import asynccontextmanager

import httpx
import jsonschema
import openai
import pytest
import uvicorn
from fastapi import FastAPI

from api import create_api
from api.body_limit import MAX_BODY_BYTES
from api.protocol.chat import ChatCompletionRequest
from inference import Engine, EngineSettings
from inference.errors import GenerationError
from inference.types import Grammar
from tests.schemas import PERSON, TOOLS, WEATHER

KEY = "e2e-secret"
USER = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def api_url(live_server) -> str:
    return live_server + "/api/v1"


@pytest.fixture(scope="module")
def client(api_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=api_url, api_key="unused", max_retries=0, timeout=120)


class TightServer:
    """An in-process uvicorn on the API alone: key required, one request at a time, 256 tokens."""

    def __init__(self):
        # The cache folder comes from NF4SERVE_CACHE_DIR, set by tests/conftest.py.
        settings = EngineSettings(model="builtin", max_context=256, max_active_requests=1,
                                  max_queued_requests=0)
        self.engine = Engine(settings)
        never_loaded = Engine(EngineSettings(model="builtin"))

        @asynccontextmanager
        async def lifespan(_):
            await self.engine.start()
            yield
            await self.engine.shutdown()

        app = FastAPI(lifespan=lifespan)
        app.mount("/loading/api/v1", create_api(never_loaded))
        app.mount("/api/v1", create_api(self.engine, api_key=KEY))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/v1"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> TightServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.1)
        assert self.engine.state == "ready", self.engine.error
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=60)

    def wait_for(self, busy: bool, timeout: float = 10) -> float:
        """Seconds until a request is decoding (`busy`), or until none is active or waiting."""
        start = time.monotonic()
        while bool(self.engine.active_count) != busy or (not busy and self.engine.queue_depth):
            assert time.monotonic() - start < timeout, "still idle" if busy else "not freed"
            time.sleep(0.01)
        return time.monotonic() - start


@pytest.fixture(scope="module")
def tight_server(builtin_dir):
    with TightServer() as server:
        yield server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def error_body(exc: openai.APIStatusError | httpx.Response) -> dict:
    body = (exc if isinstance(exc, httpx.Response) else exc.response).json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# -- chat completions with the openai client ---------------------------------------------------


def test_chat(client):
    completion = client.chat.completions.create(model="builtin", messages=USER, max_tokens=8,
                                                seed=1)
    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    assert completion.model == "builtin"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage.prompt_tokens > 0 and 1 <= usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streaming_with_usage_matches_the_plain_answer(client):
    kwargs = dict(model="builtin", messages=USER, max_tokens=12, seed=9, temperature=1.0)
    plain = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == plain.choices[0].finish_reason and all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage


def test_seeds_reproduce_and_differ(client):
    def text(seed):
        return client.chat.completions.create(model="builtin", messages=USER, max_tokens=8,
                                              seed=seed, temperature=1.0).choices[0].message.content

    assert text(5) == text(5)
    assert text(5) != text(6)


def test_n_choices(client):
    completion = client.chat.completions.create(model="builtin", messages=USER, max_tokens=6,
                                                n=3, seed=2, temperature=1.0)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert len({c.message.content for c in completion.choices}) > 1
    assert completion.usage.completion_tokens <= 18


def test_stop(client):
    kwargs = dict(model="builtin", messages=USER, max_tokens=24, seed=4, temperature=1.0)
    text = client.chat.completions.create(**kwargs).choices[0].message.content
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = client.chat.completions.create(**kwargs, stop=[stop]).choices[0]
    assert cut.message.content == text[: text.index(stop)] and cut.finish_reason == "stop"


def test_json_schema_output_validates(client):
    for seed in (1, 2, 3):
        completion = client.chat.completions.create(
            model="builtin", messages=USER, max_tokens=48, seed=seed,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "person", "schema": PERSON, "strict": True}})
        choice = completion.choices[0]
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), PERSON)


def check_call(name, arguments, expected_name=None):
    if expected_name:
        assert name == expected_name
    if name == "get_weather":
        jsonschema.validate(json.loads(arguments), WEATHER)
    else:
        assert name == "get_time" and json.loads(arguments) == {}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(
    "tool_choice",
    ["required", {"type": "function", "function": {"name": "get_weather"}}],
    ids=["required", "named"],
)
def test_forced_tool_calls(client, tool_choice, stream):
    expected = tool_choice["function"]["name"] if isinstance(tool_choice, dict) else None
    kwargs = dict(model="builtin", messages=USER, tools=TOOLS, tool_choice=tool_choice,
                  max_tokens=300, seed=3)  # room for several parallel calls
    if not stream:
        choice = client.chat.completions.create(**kwargs).choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        assert choice.message.tool_calls
        for call in choice.message.tool_calls:
            assert call.id.startswith("call_") and call.type == "function"
            check_call(call.function.name, call.function.arguments, expected)
        return
    calls: dict[int, dict] = {}
    finish = None
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        choice = chunk.choices[0]
        assert not choice.delta.content, "no content next to forced calls"
        for delta in choice.delta.tool_calls or []:
            if delta.index not in calls:  # the header: id, type, name and no argument text yet
                assert delta.id.startswith("call_") and delta.type == "function"
                assert delta.function.name and delta.function.arguments == ""
                calls[delta.index] = {"name": delta.function.name, "arguments": ""}
            else:  # argument text only, never a second header
                assert delta.id is None and delta.function.name is None and delta.function.arguments
            calls[delta.index]["arguments"] += delta.function.arguments
        finish = choice.finish_reason or finish
    assert finish == "tool_calls" and calls
    for call in calls.values():
        check_call(call["name"], call["arguments"], expected)


def test_tool_result_round_trip(client):
    first = client.chat.completions.create(
        model="builtin", messages=USER, tools=TOOLS, max_tokens=96, seed=3,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    message = first.choices[0].message
    call = message.tool_calls[0]
    messages = USER + [
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21}'},
    ]
    answer = client.chat.completions.create(model="builtin", messages=messages, tools=TOOLS,
                                            max_tokens=8, seed=1)
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert answer.usage.prompt_tokens > first.usage.prompt_tokens


# -- /generate with httpx -----------------------------------------------------------------------


def test_generate_json_and_sse(api_url):
    request = {"prompt": "Once upon a time", "max_tokens": 10, "seed": 8, "temperature": 1.0}
    plain = httpx.post(f"{api_url}/generate", json=request, timeout=60)
    assert plain.status_code == 200
    body = plain.json()
    assert body["id"].startswith("gen-") and body["finish_reason"] in ("stop", "length")
    assert set(body["timings"]) == {"queue", "time_to_first_token", "total", "tokens_per_second"}
    events = []
    with httpx.stream("POST", f"{api_url}/generate", json={**request, "stream": True},
                      timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert "".join(e["text"] for e in parsed) == body["text"]
    assert parsed[-1]["finish_reason"] == body["finish_reason"]
    assert parsed[-1]["usage"] == body["usage"]


# -- every error case ---------------------------------------------------------------------------


def test_400_invalid_parameter(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="builtin", messages=USER, temperature=3.5)
    error = error_body(info.value)
    assert error["type"] == "invalid_request_error" and error["param"] == "temperature"


def test_400_malformed_json(api_url):
    for path in ("/chat/completions", "/generate"):
        response = httpx.post(api_url + path, content=b'{"messages": [}',
                              headers={"Content-Type": "application/json"})
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_413_prompt_longer_than_the_window(client, api_url):
    long_text = "word " * 270_000  # > 262,144 tokens, the built-in model's real window
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="builtin", max_tokens=4,
                                       messages=[{"role": "user", "content": long_text}])
    assert info.value.status_code == 413
    error = error_body(info.value)
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "262144" in error["message"]
    generate = httpx.post(f"{api_url}/generate", json={"prompt": long_text}, timeout=60)
    assert generate.status_code == 413
    assert generate.json()["error"]["param"] == "prompt"
    too_large = httpx.post(f"{api_url}/chat/completions", content=b" " * (MAX_BODY_BYTES + 1),
                           headers={"Content-Type": "application/json"}, timeout=60)
    assert too_large.status_code == 413 and error_body(too_large)["code"] == "request_too_large"


def test_401_without_or_with_a_wrong_key(tight_server):
    with pytest.raises(openai.AuthenticationError) as info:
        tight_server.client("wrong").models.list()
    assert error_body(info.value)["code"] == "invalid_api_key"
    missing = httpx.post(f"{tight_server.url}/chat/completions", json={"messages": USER})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert tight_server.client().models.list().data[0].id == "builtin"
    assert httpx.get(f"{tight_server.url}/health").status_code == 200  # no key needed


def test_503_while_loading(tight_server):
    url = tight_server.url.replace("/api/v1", "/loading/api/v1")
    response = httpx.post(f"{url}/chat/completions", json={"messages": USER})
    assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
    assert response.json()["error"]["code"] == "model_not_loaded"
    assert httpx.get(f"{url}/health").status_code == 503


def test_503_when_saturated_then_a_disconnect_frees_the_engine(tight_server):
    client = tight_server.client()
    stream = client.chat.completions.create(model="builtin", messages=USER, max_tokens=200,
                                            stream=True, temperature=1.0,
                                            extra_body={"top_k": 0})
    next(iter(stream))
    tight_server.wait_for(busy=True)  # the one slot is now taken
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="builtin", messages=USER, max_tokens=2)
    assert info.value.status_code == 503
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert error_body(info.value)["code"] == "server_overloaded"
    stream.close()  # the client goes away mid-stream
    assert tight_server.wait_for(busy=False) < 5
    answer = client.chat.completions.create(model="builtin", messages=USER, max_tokens=2)
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_500_when_generation_fails_and_the_server_keeps_serving(tight_server, monkeypatch):
    original = ChatCompletionRequest.to_sampling_params
    grammars = []

    def breaking(output_ids, logits):  # batch-shaped; runs after the (real) grammar's mask
        if any(output_ids):  # after the first token: the request fails mid-generation
            raise GenerationError("the grammar engine broke")
        return logits

    def breaking_sampling_params(self, index=0):
        params = original(self, index)
        grammars.append(params.grammar)
        params.logits_processors.append(breaking)
        return params

    monkeypatch.setattr(ChatCompletionRequest, "to_sampling_params", breaking_sampling_params)
    client = tight_server.client()
    kwargs = dict(model="builtin", messages=USER, max_tokens=20,
                  response_format={"type": "json_object"})
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(**kwargs)
    error = error_body(info.value)
    assert error["type"] == "server_error" and "grammar engine broke" in error["message"]
    with pytest.raises(openai.APIError) as streamed:  # an error event inside the stream
        list(client.chat.completions.create(**kwargs, stream=True))
    assert "grammar engine broke" in streamed.value.message
    assert grammars == [Grammar("json_object")] * 2  # both failed requests were constrained
    monkeypatch.undo()
    assert client.chat.completions.create(**kwargs).choices[0].message.content.startswith("{")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_a_disconnect_frees_the_live_server(api_url, stream):
    async def wait_active(done, message: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done((await http.get("/health")).json()["active_requests"]):
            assert time.monotonic() < deadline, message
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient(base_url=api_url, timeout=60) as http:
        request = asyncio.create_task(http.post("/chat/completions", json={
            "messages": USER, "max_tokens": 100_000, "top_k": 0, "stream": stream}))
        await wait_active(bool, "it never became active", 30)  # decoding: minutes of work ahead
        assert not request.done()
        request.cancel()  # the client goes away mid-request, without reading an answer
        await wait_active(lambda n: n == 0, "the disconnected request holds the engine", 10)
