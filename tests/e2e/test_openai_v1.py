"""End to end at the base URL most tools are configured with, `.../v1`: the official `openai` client
(chat, streaming, models, legacy completions with string, list and token-id prompts, streaming and
`echo`, `logit_bias`), tokenize/detokenize over HTTP, the start-up log's last line, and a server
started with `--context-error-status 400`, whose overflow the client raises as `BadRequestError`.
A live server on the built-in model; nothing is mocked."""

from __future__ import annotations

import re
import time
from urllib.parse import urlparse

import httpx
import openai
import pytest

from tests.e2e.conftest import ROOT

USER = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def v1_url(live_server) -> str:
    return live_server + "/v1"


@pytest.fixture(scope="module")
def client(v1_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=v1_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tokenizer(builtin_tokenizer):
    return builtin_tokenizer


# -- chat, streaming and models -------------------------------------------------------------------


def test_models(client):
    assert [model.id for model in client.models.list()] == ["builtin"]
    assert client.models.retrieve("builtin").id == "builtin"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-5")


def test_chat_and_its_stream_agree(client):
    kwargs = dict(model="builtin", messages=USER, max_tokens=10, seed=3, temperature=1.0)
    plain = client.chat.completions.create(**kwargs)
    assert plain.object == "chat.completion" and plain.choices[0].finish_reason in ("stop", "length")
    chunks = list(client.chat.completions.create(**kwargs, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage == plain.usage


# -- legacy completions ---------------------------------------------------------------------------


def test_completion_of_a_string(client, tokenizer):
    completion = client.completions.create(model="builtin", prompt="Once upon a time",
                                           max_tokens=5, seed=1)
    assert completion.id.startswith("cmpl-") and completion.object == "text_completion"
    (choice,) = completion.choices
    assert isinstance(choice.text, str) and choice.finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens == len(tokenizer.encode("Once upon a time"))
    assert 1 <= completion.usage.completion_tokens <= 5


def test_completions_of_a_list_and_of_token_ids(client, tokenizer):
    prompts = ["The sea is", "Mountains are"]
    listed = client.completions.create(model="builtin", prompt=prompts, max_tokens=4,
                                       temperature=0)
    assert [c.index for c in listed.choices] == [0, 1]
    ids = [tokenizer.encode(p) for p in prompts]
    one = client.completions.create(model="builtin", prompt=ids[0], max_tokens=4, temperature=0)
    assert one.choices[0].text == listed.choices[0].text
    both = client.completions.create(model="builtin", prompt=ids, max_tokens=4, temperature=0)
    assert [c.text for c in both.choices] == [c.text for c in listed.choices]


def test_streamed_completion_with_echo(client):
    kwargs = dict(model="builtin", prompt="The sea is", max_tokens=6, seed=8, temperature=1.0,
                  echo=True)
    plain = client.completions.create(**kwargs)
    assert plain.choices[0].text.startswith("The sea is")
    chunks = list(client.completions.create(**kwargs, stream=True))
    assert chunks[0].choices[0].text == "The sea is"  # the echo comes first
    assert "".join(c.choices[0].text for c in chunks) == plain.choices[0].text
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason


def test_suffix_is_refused(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="builtin", prompt="def f(", suffix="return x",
                                  max_tokens=2)
    assert info.value.body["param"] == "suffix"


# -- logit_bias and tokenize ----------------------------------------------------------------------


def test_logit_bias_forces_and_bans(client, tokenizer):
    (banana,) = tokenizer.encode(" banana")
    forced = client.chat.completions.create(model="builtin", messages=USER, max_tokens=4,
                                            temperature=0, logit_bias={str(banana): 100})
    assert forced.choices[0].message.content == " banana" * 4
    banned = client.chat.completions.create(model="builtin", messages=USER, max_tokens=4,
                                            temperature=0, logit_bias={str(banana): -100},
                                            logprobs=True, top_logprobs=5)
    for item in banned.choices[0].logprobs.content:
        assert item.token != " banana"
        assert " banana" not in [top.token for top in item.top_logprobs]


def test_tokenize_and_detokenize_round_trip(v1_url):
    text = "Grüße, 世界 🌍 — count me"
    with httpx.Client(base_url=v1_url, timeout=60) as http:
        tokens = http.post("/tokenize", json={"prompt": text}).json()
        assert tokens["count"] == len(tokens["tokens"]) > 0 and tokens["max_model_len"] > 0
        assert http.post("/detokenize", json={"tokens": tokens["tokens"]}).json() == {
            "prompt": text}
        chat = http.post("/tokenize", json={"messages": USER}).json()
    assert chat["count"] > 0


# -- the start-up log and --context-error-status 400 ----------------------------------------------


@pytest.fixture(scope="module")
def strict_url(server_factory) -> str:
    return server_factory("--model", "builtin", "--no-fallback", "--no-ui", "--max-context", "64",
                          "--context-error-status", "400")


def server_log(base: str) -> list[str]:
    return (ROOT / ".cache" / f"server-{urlparse(base).port}.log").read_text().splitlines()


def test_the_start_up_log_ends_by_saying_where_the_server_is(strict_url):
    deadline = time.monotonic() + 10
    while not any("is ready" in line for line in server_log(strict_url)):
        assert time.monotonic() < deadline, server_log(strict_url)[-20:]
        time.sleep(0.1)
    lines = server_log(strict_url)
    ready = next(i for i, line in enumerate(lines) if "is ready" in line)
    started = max(i for i, line in enumerate(lines)
                  if re.search(r"Uvicorn running on|Application startup complete|Engine ready",
                               line))
    assert ready > started  # the last line of the start-up
    assert f"API {strict_url}/v1 " in lines[ready] and f"docs {strict_url}/v1/docs" in lines[ready]
    assert "no playground (--no-ui)" in lines[ready]


def test_context_overflow_is_a_bad_request_for_the_openai_client(strict_url):
    client = openai.OpenAI(base_url=strict_url + "/v1", api_key="unused", max_retries=0)
    long = "word " * 100
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(model="builtin", max_tokens=4,
                                       messages=[{"role": "user", "content": long}])
    with pytest.raises(openai.BadRequestError) as completion:
        client.completions.create(model="builtin", prompt=long, max_tokens=4)
    for error in (chat.value, completion.value):
        assert error.status_code == 400 and error.code == "context_length_exceeded"
