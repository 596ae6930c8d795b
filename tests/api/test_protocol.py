"""Request models: what pydantic accepts and rejects, and how a request becomes engine parameters."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.protocol import ChatCompletionRequest, GenerateRequest
from api.protocol.chat import TOOL_CALL_PREFIX
from api.tool_calls import CALL_START
from inference.types import Grammar

USER = [{"role": "user", "content": "Hi"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": USER, **fields})


def test_unknown_fields_are_ignored():
    request = chat(model="gpt-4o", some_future_field={"x": 1}, store=True)
    assert not hasattr(request, "some_future_field")


def test_sampling_params_carry_every_parameter():
    request = chat(max_tokens=5, temperature=0.3, top_p=0.5, top_k=7, min_p=0.1, stop="END",
                   seed=11, presence_penalty=0.5, frequency_penalty=-0.5, repetition_penalty=1.1,
                   logprobs=True, top_logprobs=3)
    params = request.to_sampling_params()
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k, params.min_p) == (
        5, 0.3, 0.5, 7, 0.1)
    assert params.stop == ["END"] and params.seed == 11 and params.logprobs == 3
    assert (params.presence_penalty, params.frequency_penalty, params.repetition_penalty) == (
        0.5, -0.5, 1.1)


def test_defaults_are_left_to_the_engine():
    params = chat().to_sampling_params()
    assert params.max_tokens is None and params.temperature is None and params.top_k is None
    assert params.logprobs is None and params.stop == []


def test_max_completion_tokens_wins_over_max_tokens():
    assert chat(max_tokens=50, max_completion_tokens=9).to_sampling_params().max_tokens == 9


def test_each_choice_gets_its_own_seed():
    request = chat(n=3, seed=100)
    assert [request.to_sampling_params(i).seed for i in range(3)] == [100, 101, 102]
    assert chat(n=2).to_sampling_params(1).seed is None


def test_logprobs_without_top_logprobs_is_zero():
    assert chat(logprobs=True).to_sampling_params().logprobs == 0


def test_messages_become_template_dicts():
    request = ChatCompletionRequest.model_validate({"messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "you"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]})
    system, user, assistant, tool = request.engine_messages()
    assert system == {"role": "system", "content": "Be brief."}
    assert user == {"role": "user", "content": "Hello you"}
    assert assistant["content"] == ""
    assert assistant["tool_calls"][0]["function"] == {"name": "get_weather",
                                                      "arguments": {"city": "Paris"}}
    assert tool == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"n": 9}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages"),
        ({"repetition_penalty": 1e-300}, "repetition_penalty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"stop": ["a", ""]}, "stop"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "string"}}}]}, "tools"),
    ],
)
def test_invalid_requests_are_rejected_on_their_field(fields, param):
    with pytest.raises(ValidationError) as info:
        chat(**fields)
    assert info.value.errors()[0]["loc"][0] == param


def test_too_many_stop_sequences_says_so():
    with pytest.raises(ValidationError) as info:
        chat(stop=["a", "b", "c", "d", "e"])
    (error,) = info.value.errors()
    assert error["msg"] == "at most 4 stop sequences are allowed, got 5"
    assert chat(stop=["a", "b", "c", "d"]).to_sampling_params().stop == ["a", "b", "c", "d"]


def test_tool_parameters_must_be_an_object_schema_and_default_to_no_arguments():
    with pytest.raises(ValidationError) as info:
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {
            "type": "string"}}}])
    assert info.value.errors()[0]["loc"] == ("tools", 0, "function", "parameters")
    request = chat(tools=[{"type": "function", "function": {"name": "f"}}])
    assert request.engine_tools()[0]["function"]["parameters"] == {
        "type": "object", "properties": {}}


def test_tool_modes():
    assert chat().tool_mode is None
    assert chat(tools=TOOLS).tool_mode == "auto"
    assert chat(tools=TOOLS, tool_choice="none").tool_mode is None
    assert chat(tools=TOOLS, tool_choice="none").engine_tools() is None
    assert chat(tools=TOOLS, tool_choice="required").tool_mode == "required"
    named = chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert named.tool_mode == "get_weather" and named.forces_tool_call


def test_forced_tool_call_prefixes_the_assistant_turn():
    request = chat(tools=TOOLS, tool_choice="required", seed=1)
    generation = request.to_generation_request()
    assert generation.assistant_prefix == CALL_START + "\n"
    assert generation.assistant_prefix == TOOL_CALL_PREFIX
    grammar = generation.sampling.grammar
    assert isinstance(grammar, Grammar)
    assert grammar.kind == "tool_call" and grammar.tool_name is None and grammar.parallel
    assert [tool["function"]["name"] for tool in grammar.tools] == ["get_weather"]
    assert generation.sampling.logits_processors == []
    assert generation.tools[0]["function"]["name"] == "get_weather"


def test_tool_call_grammar_names_the_forced_function_and_its_parallel_flag():
    named = {"type": "function", "function": {"name": "get_weather"}}
    grammar = chat(tools=TOOLS, tool_choice=named).to_generation_request().sampling.grammar
    assert grammar.kind == "tool_call" and grammar.tool_name == "get_weather"
    assert not grammar.parallel  # a named function is called once
    assert not chat(tools=TOOLS, tool_choice="required",
                    parallel_tool_calls=False).grammar().parallel
    assert chat(tools=TOOLS, tool_choice="required").grammar().parallel
    # auto and none leave the output free: no grammar, no assistant prefix
    for choice in ("auto", "none"):
        generation = chat(tools=TOOLS, tool_choice=choice).to_generation_request()
        assert generation.sampling.grammar is None and generation.assistant_prefix == ""


def test_json_response_format_adds_a_grammar():
    request = chat(response_format={"type": "json_object"})
    assert request.grammar() == Grammar("json_object")
    assert request.to_generation_request().sampling.grammar == Grammar("json_object")
    assert request.to_generation_request().assistant_prefix == ""
    assert chat(response_format={"type": "text"}).grammar() is None
    assert chat(response_format={"type": "text"}).to_sampling_params().grammar is None
    assert chat().to_sampling_params().grammar is None


def test_json_schema_response_format_carries_its_schema():
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    request = chat(response_format={"type": "json_schema",
                                    "json_schema": {"name": "x", "schema": schema}}, n=2)
    for index in range(2):
        grammar = request.to_generation_request(index).sampling.grammar
        assert grammar == Grammar("json_schema", schema=schema)
        assert grammar.kind == "json_schema" and grammar.schema == schema


def test_generate_request():
    request = GenerateRequest.model_validate({"prompt": "Once", "max_tokens": 3, "stop": ["x"],
                                              "seed": 5, "unknown": 1})
    generation = request.to_generation_request()
    assert generation.prompt == "Once" and generation.messages is None
    assert generation.sampling.max_tokens == 3 and generation.sampling.stop == ["x"]
    with pytest.raises(ValidationError):
        GenerateRequest.model_validate({"prompt": ""})
