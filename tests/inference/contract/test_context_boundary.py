"""The context window, to the token, on an engine limited to 48 tokens: a prompt of window - 1
tokens gets exactly one token, a prompt of the whole window is refused (`ContextLengthError`, which
the API answers with 413), `max_tokens` beyond the room left (up to the window) is clipped to it,
and no generation ever goes past the window. Prompts are token ids, so their length is exact."""

from __future__ import annotations

import pytest

from api import create_api
from inference import ContextLengthError, Engine, EngineSettings
from tests.api.conftest import asgi_client
from tests.conftest import CACHE_DIR

from .helpers import BanTokens, ids_req

WINDOW = 48


@pytest.fixture(scope="module")
async def window_engine(builtin_dir):
    engine = Engine(EngineSettings(model="builtin", cache_dir=CACHE_DIR, max_context=WINDOW,
                                   compute_dtype="float32"))
    await engine.start()
    assert engine.state == "ready", engine.error
    assert engine.max_context == WINDOW == engine.info()["max_context"]
    yield engine
    await engine.shutdown()


@pytest.fixture(scope="module")
def prompt_ids(builtin_tokenizer):
    """`prompt_ids(n)`: n ordinary tokens (English text, no special tokens)."""
    text = "The quick brown fox jumps over the lazy dog while the cat sleeps. " * 20
    ids = builtin_tokenizer.encode(text, add_special_tokens=False)

    def make(n: int) -> list[int]:
        assert len(ids) >= n
        return ids[:n]

    return make


@pytest.fixture(scope="module")
def no_stop(window_engine):
    """Forbids the stop tokens, so that a generation runs until its length limit."""
    return BanTokens(window_engine.info()["stop_token_ids"])


@pytest.mark.parametrize("max_tokens", [None, 1, 5, WINDOW])  # more than WINDOW: a 400
async def test_window_minus_one_prompt_gets_exactly_one_token(window_engine, prompt_ids,
                                                              max_tokens):
    stream = await window_engine.asubmit(ids_req(prompt_ids(WINDOW - 1), max_tokens,
                                                 temperature=0))
    assert stream.prompt_tokens == WINDOW - 1 and stream.max_tokens == 1
    result = await stream.collect()
    assert len(result.token_ids) == 1 == result.usage.completion_tokens
    assert result.usage.total_tokens == WINDOW
    if result.finish_reason == "stop":
        assert result.token_ids[0] in window_engine.info()["stop_token_ids"]
    else:
        assert result.finish_reason == "length"


async def test_window_minus_one_without_a_stop_token_finishes_on_length(window_engine, prompt_ids,
                                                                        no_stop):
    result = await window_engine.generate(ids_req(prompt_ids(WINDOW - 1), WINDOW,
                                                  logits_processors=[no_stop]))
    assert result.finish_reason == "length" and len(result.token_ids) == 1


@pytest.mark.parametrize("length", [WINDOW, WINDOW + 1])
async def test_a_prompt_filling_the_window_is_refused(window_engine, prompt_ids, length):
    with pytest.raises(ContextLengthError) as caught:
        window_engine.submit(ids_req(prompt_ids(length), 1))
    assert caught.value.prompt_tokens == length and caught.value.max_context == WINDOW
    with pytest.raises(ContextLengthError):
        await window_engine.asubmit(ids_req(prompt_ids(length), None))
    with pytest.raises(ContextLengthError):
        await window_engine.generate(ids_req(prompt_ids(length), 1))


@pytest.mark.parametrize("length", [1, 20, 40, WINDOW - 2])
async def test_max_tokens_beyond_the_room_is_clipped_to_it(window_engine, prompt_ids, no_stop,
                                                           length):
    room = WINDOW - length
    for max_tokens in (None, room + 1):
        stream = window_engine.submit(ids_req(prompt_ids(length), max_tokens, temperature=0.8,
                                              seed=length, logits_processors=[no_stop]))
        assert stream.max_tokens == room
        result = await stream.collect()
        assert result.finish_reason == "length"
        assert len(result.token_ids) == room == result.usage.completion_tokens
        assert result.usage.prompt_tokens + result.usage.completion_tokens == WINDOW


async def test_max_tokens_within_the_room_is_kept(window_engine, prompt_ids, no_stop):
    stream = window_engine.submit(ids_req(prompt_ids(40), 3, logits_processors=[no_stop]))
    assert stream.max_tokens == 3
    assert len((await stream.collect()).token_ids) == 3


async def test_generation_never_goes_past_the_window(window_engine, prompt_ids):
    # Free sampling, stop tokens allowed: whatever happens, prompt + output fits the window.
    for length in (10, 30, 46, 47):
        stream = await window_engine.asubmit(ids_req(prompt_ids(length), None, temperature=1.0,
                                                     top_k=0, seed=length))
        generated = 0
        async for chunk in stream:
            generated += len(chunk.token_ids)
            assert length + generated <= WINDOW
        assert chunk.usage.total_tokens <= WINDOW and chunk.finish_reason in ("length", "stop")


async def test_the_api_answers_the_boundary_with_413(window_engine, builtin_tokenizer):
    # /generate takes text: " hello" repeated is one token per repetition.
    def prompt(n: int) -> str:
        text = " hello" * n
        assert len(builtin_tokenizer.encode(text, add_special_tokens=False)) == n
        return text

    async with asgi_client(create_api(window_engine)) as client:
        fits = await client.post("/generate", json={"prompt": prompt(WINDOW - 1),
                                                    "max_tokens": WINDOW})
        assert fits.status_code == 200, fits.text
        assert fits.json()["usage"]["completion_tokens"] == 1
        full = await client.post("/generate", json={"prompt": prompt(WINDOW), "max_tokens": 1})
        assert full.status_code == 413, full.text
        assert full.json()["error"]["code"] == "context_length_exceeded"
