"""The built-in chat template renders Qwen3-Instruct's published prompt format exactly, plus Qwen3's
`enable_thinking` switch."""

from __future__ import annotations

import json

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}
TOOLS_BLOCK = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    + json.dumps(WEATHER, ensure_ascii=False)
    + "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
)


def render(tok, messages, tools=None, prompt=True):
    return tok.apply_chat_template(messages, tools=tools, tokenize=False,
                                   add_generation_prompt=prompt)


def test_plain(builtin_tokenizer):
    assert render(builtin_tokenizer, [{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_system(builtin_tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert render(builtin_tokenizer, messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_multi_turn(builtin_tokenizer):
    messages = [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "and 2+2?"},
    ]
    assert render(builtin_tokenizer, messages) == (
        "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n"
        "<|im_start|>user\nand 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_tools_with_system(builtin_tokenizer):
    messages = [{"role": "system", "content": "Sys."}, {"role": "user", "content": "Weather?"}]
    assert render(builtin_tokenizer, messages, tools=[WEATHER]) == (
        "<|im_start|>system\nSys.\n\n" + TOOLS_BLOCK
        + "<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_tools_without_system(builtin_tokenizer):
    out = render(builtin_tokenizer, [{"role": "user", "content": "Weather?"}], tools=[WEATHER])
    assert out == "<|im_start|>system\n" + TOOLS_BLOCK + (
        "<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n")


def test_tool_calls_and_merged_results(builtin_tokenizer):
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "25C"},
    ]
    assert render(builtin_tokenizer, messages, tools=[WEATHER]) == (
        "<|im_start|>system\n" + TOOLS_BLOCK
        + "<|im_start|>user\nWeather in Paris and Rome?<|im_end|>\n"
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n18C\n</tool_response>\n"
        "<tool_response>\n25C\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_tool_call_after_text(builtin_tokenizer):
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather",
                                              "arguments": '{"city": "Oslo"}'}}]},
    ]
    out = render(builtin_tokenizer, messages, prompt=False)
    assert out.endswith(
        "<|im_start|>assistant\nLet me check.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>\n'
    )


def test_enable_thinking(builtin_tokenizer):
    # Unset: Instruct-2507's prompt. False: the hybrid models' empty block. True: the reply starts
    # inside <think>, as the Thinking-2507 templates make it.
    user = [{"role": "user", "content": "Hi"}]
    head = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert builtin_tokenizer.apply_chat_template(
        user, tokenize=False, add_generation_prompt=True, enable_thinking=False
    ) == head + "<think>\n\n</think>\n\n"
    assert builtin_tokenizer.apply_chat_template(
        user, tokenize=False, add_generation_prompt=True, enable_thinking=True
    ) == head + "<think>\n"
    assert render(builtin_tokenizer, user) == head
    assert render(builtin_tokenizer, user, prompt=False) == "<|im_start|>user\nHi<|im_end|>\n"
