"""The rendered chat prompt carries everything the model must see: the tool definitions (name,
description, parameters) and, in a history, the assistant's tool calls and the tool results.
Checked on the stream's `prompt_text` and on its decoded `prompt_token_ids` (what the model reads),
for a request built directly and for one built by the API's request model."""

from __future__ import annotations

import json

import pytest

from api.protocol import ChatCompletionRequest
from inference import GenerationRequest, SamplingParams
from tests.schemas import TOOLS, WEATHER

RESULT = '{"temperature": 21, "sky": "clear-7f3a"}'
CALL_ARGUMENTS = {"city": "Paris", "unit": "c"}
HISTORY = [
    {"role": "system", "content": "You answer weather questions."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": json.dumps(CALL_ARGUMENTS)}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": RESULT},
    {"role": "user", "content": "And tomorrow?"},
]


def expected_pieces(tools: bool = True) -> list[str]:
    """What must appear, in this order: the tools, the call, its result, the last question."""
    definitions = ["<tools>", *(json.dumps(tool, ensure_ascii=False) for tool in TOOLS), "</tools>"]
    return [
        *(definitions if tools else []),  # each definition whole, as the template writes it
        '<tool_call>\n{"name": "get_weather", "arguments": ' + json.dumps(CALL_ARGUMENTS)
        + "}\n</tool_call>",
        "<tool_response>\n" + RESULT + "\n</tool_response>",
        "And tomorrow?",
        "<|im_start|>assistant\n",
    ]


def assert_in_order(text: str, pieces: list[str]) -> None:
    position = 0
    for piece in pieces:
        found = text.find(piece, position)
        assert found >= 0, f"{piece!r} missing (after offset {position}) in:\n{text}"
        position = found + len(piece)


async def submitted_prompt(engine, tokenizer, request: GenerationRequest) -> tuple[str, str]:
    stream = await engine.asubmit(request)
    await stream.collect()
    decoded = tokenizer.decode(stream.prompt_token_ids, skip_special_tokens=False)
    assert stream.prompt_tokens == len(stream.prompt_token_ids)
    return stream.prompt_text, decoded


async def test_tools_and_tool_results_reach_the_prompt(builtin_engine, builtin_tokenizer):
    request = GenerationRequest(messages=HISTORY, tools=TOOLS,
                                sampling=SamplingParams(max_tokens=1))
    text, decoded = await submitted_prompt(builtin_engine, builtin_tokenizer, request)
    assert decoded == text
    for prompt in (text, decoded):
        assert_in_order(prompt, expected_pieces())
        assert "get_weather" in prompt and "Weather in a city." in prompt
        assert json.dumps(WEATHER) in prompt  # the parameters schema, as the model reads it
        assert "You answer weather questions." in prompt


@pytest.mark.parametrize("tool_choice", ["auto", "required"])
async def test_the_api_request_renders_the_same_tools_and_results(builtin_engine,
                                                                  builtin_tokenizer, tool_choice):
    body = ChatCompletionRequest.model_validate(
        {"messages": HISTORY, "tools": TOOLS, "tool_choice": tool_choice, "max_tokens": 1})
    text, decoded = await submitted_prompt(builtin_engine, builtin_tokenizer,
                                           body.to_generation_request())
    for prompt in (text, decoded):
        assert_in_order(prompt, expected_pieces())
    if tool_choice == "required":  # a forced call: the prompt opens the first call
        assert text.endswith("<|im_start|>assistant\n<tool_call>\n")


async def test_without_tools_the_prompt_has_no_tool_block(builtin_engine, builtin_tokenizer):
    # Control for the checks above: tools hidden (`tool_choice: none`) leave no definitions, while
    # the history's call and result stay.
    body = ChatCompletionRequest.model_validate(
        {"messages": HISTORY, "tools": TOOLS, "tool_choice": "none", "max_tokens": 1})
    text, _ = await submitted_prompt(builtin_engine, builtin_tokenizer,
                                     body.to_generation_request())
    assert "<tools>" not in text and "Weather in a city." not in text
    assert_in_order(text, expected_pieces(tools=False))
