"""The chat service layer on a real engine whose output is forced token by token: text, reasoning and
a Qwen3 tool call in one answer, which a random model never writes by itself. Markup must never
reach the content, and the streamed answer must agree with the JSON one, however the engine's
chunks cut the text.
"""

from __future__ import annotations

import json

import pytest
import torch

from api.chat import ChatCompletion
from api.protocol import ChatCompletionRequest
from inference import structured
from tests.api.events import collect_chat_stream, read_events

TOOLS = [{"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"tz": {"type": "string"}}}}}]
FORCED = ('Sure. <think>\nThe user wants the time.\n</think>\n\nLet me check <tool_call>\n'
          '{"name": "get_time", "arguments": {"tz": "UTC"}}\n</tool_call> then answer.')
MARKUP = ("<tool_call>", "</tool_call>", "<think>", "</think>", "<|im_end|>")


class ForceTokens:
    """A logits processor that forces a fixed token sequence, then the end of the turn.

    Batch-shaped: `output_ids[i]` is row i's output so far, `logits` is (rows, vocabulary)."""

    def __init__(self, ids: list[int], end: int):
        self.ids = [*ids, end]

    def __call__(self, output_ids: list[list[int]], logits: torch.Tensor) -> torch.Tensor:
        forced = torch.full_like(logits, float("-inf"))
        for row, ids in enumerate(output_ids):
            forced[row, self.ids[min(len(ids), len(self.ids) - 1)]] = 0.0
        return forced


async def forced_completion(engine, text: str, **fields) -> ChatCompletion:
    """A submitted chat completion whose every choice writes `text` (through the real engine)."""
    body = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "What time is it?"}], "tools": TOOLS,
         "max_tokens": 200, **fields})
    tokenizer = engine.tokenizer
    ids = tokenizer.encode(text, add_special_tokens=False)
    requests = [body.to_generation_request(i) for i in range(body.n)]
    for request in requests:
        request.sampling.logits_processors.append(
            ForceTokens(ids, structured.end_of_turn_id(tokenizer)))
    completion = ChatCompletion(engine, body)
    await completion.submit(requests)
    return completion


async def answer(engine, text: str, **fields) -> dict:
    completion = await forced_completion(engine, text, **fields)
    results = [await stream.collect() for stream in completion.streams]
    return completion.response(results).model_dump()


async def streamed(engine, text: str, **fields) -> list:
    completion = await forced_completion(engine, text, stream=True, **fields)
    return read_events("".join([event async for event in completion.events()]))


@pytest.mark.parametrize("n", [1, 2])
async def test_forced_markup_never_leaks_and_both_modes_agree(builtin_engine, n):
    body = await answer(builtin_engine, FORCED, n=n)
    events = await streamed(builtin_engine, FORCED, n=n)
    choices = collect_chat_stream(events)
    assert len(body["choices"]) == len(choices) == n
    for choice in body["choices"]:
        message = choice["message"]
        assert message["content"] == "Sure. Let me check then answer."
        assert message["reasoning_content"] == "The user wants the time."
        (call,) = message["tool_calls"]
        assert call["function"]["name"] == "get_time"
        assert json.loads(call["function"]["arguments"]) == {"tz": "UTC"}
        assert choice["finish_reason"] == "tool_calls"
        got = choices[choice["index"]]
        assert (got["content"], got["reasoning"], got["finish"]) == (
            message["content"], message["reasoning_content"], choice["finish_reason"])
        assert [(c["name"], c["arguments"]) for c in got["tool_calls"].values()] == [
            (call["function"]["name"], call["function"]["arguments"])]
    # Markup is in no delta either, not only in the reassembled text.
    for event in events[:-1]:
        for choice in event["choices"]:
            delta = choice["delta"]
            for text in (delta.get("content"), delta.get("reasoning_content")):
                assert not any(tag in (text or "") for tag in MARKUP), delta


async def test_forced_call_with_string_arguments_is_unquoted_in_both_modes(builtin_engine):
    text = '<tool_call>\n{"name": "get_time", "arguments": "{\\"tz\\": \\"UTC\\"}"}\n</tool_call>'
    message = (await answer(builtin_engine, text))["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"]["arguments"] == '{"tz": "UTC"}'
    calls = collect_chat_stream(await streamed(builtin_engine, text))[0]["tool_calls"]
    assert [c["arguments"] for c in calls.values()] == ['{"tz": "UTC"}']


async def test_choices_after_the_first_reuse_its_prompt_tokens(builtin_engine):
    completion = await forced_completion(builtin_engine, "Hi", n=3)
    first, *others = completion.streams
    assert first.prompt_text is not None
    assert all(s.prompt_text is None and s.prompt_token_ids == first.prompt_token_ids
               for s in others)
    for stream in completion.streams:
        await stream.collect()

