"""The Qwen3 tool-call parser: blocks become calls, markup never reaches the content, and a stream
cut anywhere gives exactly what the whole text gives."""

from __future__ import annotations

import json
import random

import pytest

from api.tool_calls import ToolCallParser, string_arguments, strip_call_end

ONE_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TWO_CALLS = (
    "Let me look that up.\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": {"n": 2}}}\n'
    "</tool_call>\n"
    '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
)
TEXTS = [
    ONE_CALL,
    TWO_CALLS,
    "No tools needed: 2 < 3 and <b>bold</b>.",
    '<tool_call>\n{"arguments": {"a": 1}, "name": "f"}\n</tool_call>',  # other key order
    "<tool_call>\nnot json at all\n</tool_call> and after",
    '<tool_call>\n{"name": "f", "arguments": {"s": "}}"',  # cut off by max_tokens
    '<tool_call>\n{"name": "f", "argu',  # cut off inside the header
    "text </tool_call> stray closing tag",
    'unicode ☃ <tool_call>\n{"name": "f", "arguments": {"s": "é☃"}}\n</tool_call>\n',
    'text <tool_call>\n{"name": "f", "arguments": {}}\n</tool_call> after',  # glued if careless
    'a\n\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n\nb  ',
    '<tool_call>\n{"name": "f", "arguments": "{\\"city\\": \\"Paris\\"}"}\n</tool_call>',
    '<tool_call>\n{"name": "f", "arguments": "{\\"s\\": \\"}}',  # a string cut off
]


def stream(text: str, rng: random.Random, *, in_call: bool = False):
    """Feed `text` in random pieces; return (content, {index: (id, name, arguments)})."""
    parser = ToolCallParser(in_call=in_call)
    content, calls = "", {}
    position = 0
    results = []
    while position < len(text):
        size = rng.randint(1, 6)
        results.append(parser.feed(text[position : position + size]))
        position += size
    results.append(parser.finish())
    for result in results:
        content += result.content
        for delta in result.tool_calls:
            call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
            if delta.id is not None:
                assert call["id"] is None, "a call's header is sent once"
                call["id"], call["name"] = delta.id, delta.name
            call["arguments"] += delta.arguments
    return parser.final_content(content), calls


def test_one_call_becomes_tool_calls_and_no_content():
    content, calls = ToolCallParser.parse(ONE_CALL)
    assert content is None
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    assert calls[0].id.startswith("call_")


def test_content_before_calls_is_kept_without_markup():
    content, calls = ToolCallParser.parse(TWO_CALLS)
    assert content == "Let me look that up."
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].arguments) == {"city": "Paris", "days": {"n": 2}}
    assert json.loads(calls[1].arguments) == {}
    assert len({c.id for c in calls}) == 2


def test_plain_text_is_untouched():
    text = "No tools needed: 2 < 3 and <b>bold</b>."
    assert ToolCallParser.parse(text) == (text, [])


def test_forced_call_starts_inside_the_block():
    content, calls = ToolCallParser.parse(
        '{"name": "f", "arguments": {"x": 1}}\n</tool_call>', in_call=True
    )
    assert content is None
    assert [(c.name, c.arguments) for c in calls] == [("f", '{"x": 1}')]


def test_other_key_order_is_parsed_as_json():
    _, calls = ToolCallParser.parse(TEXTS[3])
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("f", {"a": 1})]


def test_block_that_is_not_a_call_becomes_content_without_tags():
    content, calls = ToolCallParser.parse(TEXTS[4])
    assert calls == []
    assert content == "not json at all and after"


def test_call_cut_off_keeps_the_arguments_written_so_far():
    content, calls = ToolCallParser.parse(TEXTS[5])
    assert content is None
    assert calls[0].arguments == '{"s": "}}"'


def test_call_cut_off_in_its_header_is_dropped():
    assert ToolCallParser.parse(TEXTS[6]) == ("", [])


def test_stray_closing_tag_is_dropped():
    content, calls = ToolCallParser.parse(TEXTS[7])
    assert calls == [] and content == "text stray closing tag"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('text <tool_call>\n{"name": "f", "arguments": {}}\n</tool_call> after', "text after"),
        ('text<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call> after', "text after"),
        ('text\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n\nafter', "text\nafter"),
        ('a <tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n'
         '<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call> b', "a b"),
        ('\n  <tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n done \n', "done"),
    ],
)
def test_text_around_a_block_keeps_one_separator(text, expected):
    content, calls = ToolCallParser.parse(text)
    assert content == expected and calls


def test_string_arguments_are_unquoted_as_in_the_whole_block_parse():
    qwen_order = '<tool_call>\n{"name": "f", "arguments": "{\\"city\\": \\"Paris\\"}"}\n</tool_call>'
    other_order = '<tool_call>\n{"arguments": "{\\"city\\": \\"Paris\\"}", "name": "f"}\n</tool_call>'
    for text in (qwen_order, other_order):
        _, calls = ToolCallParser.parse(text)
        assert [(c.name, c.arguments) for c in calls] == [("f", '{"city": "Paris"}')]
    parser = ToolCallParser()
    header = parser.feed(qwen_order[:-len("}\n</tool_call>")])
    assert [(d.name, d.arguments) for d in header.tool_calls] == [("f", "")]  # held: a string
    rest = parser.feed(qwen_order[-len("}\n</tool_call>"):])
    assert "".join(d.arguments for d in rest.tool_calls) == '{"city": "Paris"}'


@pytest.mark.parametrize(
    ("body", "arguments"),
    [('"{\\"a\\": 1}"}\n', '{"a": 1}'), ('"{\\"a\\": \\"}"', '{"a": "}'), ('"x\\', '"x\\')],
)
def test_string_arguments(body, arguments):
    assert string_arguments(body) == arguments


@pytest.mark.parametrize("text", TEXTS)
def test_markup_never_leaks_into_content(text):
    content, calls = ToolCallParser.parse(text)
    for tag in ("<tool_call>", "</tool_call>"):
        assert tag not in (content or "")
        assert all(tag not in c.arguments for c in calls)


@pytest.mark.parametrize("text", TEXTS)
def test_streamed_pieces_agree_with_the_whole_text(text):
    content, calls = ToolCallParser.parse(text)
    expected = [(c.name, c.arguments) for c in calls]
    rng = random.Random(text)
    for _ in range(30):
        streamed_content, streamed = stream(text, rng)
        assert streamed_content == content
        assert [(streamed[i]["name"], streamed[i]["arguments"]) for i in sorted(streamed)] == (
            expected
        )


def test_name_is_sent_before_any_argument():
    parser = ToolCallParser()
    first = parser.feed('<tool_call>\n{"name": "get_weather", "arguments": {"ci')
    assert [(d.index, d.name) for d in first.tool_calls if d.id] == [(0, "get_weather")]
    assert "".join(d.arguments for d in first.tool_calls) == '{"ci'
    more = parser.feed('ty": "Paris"}')
    # `}` could close the call object: held back until the block ends
    assert "".join(d.arguments for d in more.tool_calls) == 'ty": "Paris"'
    end = parser.feed("}\n</tool_call>")
    assert "".join(d.arguments for d in end.tool_calls) == "}"


@pytest.mark.parametrize(
    ("body", "arguments"),
    [('{"a": 1}}\n', '{"a": 1}'), ('{"a": 1} }', '{"a": 1}'), ("{}}", "{}"), ('{"a": 1}', '{"a": 1')],
)
def test_strip_call_end(body, arguments):
    assert strip_call_end(body) == arguments
