"""Grammar-constrained decoding: whatever the logits say, the output follows the grammar.

The matchers are driven here as the engine drives them (bitmasks filled on the host for the model's
logits width, applied as one tensor op) by random logits, a stand-in for the worst possible model:
for many seeds the sampled text must parse, validate against its schema, and end with `<|im_end|>`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch

from inference import structured
from inference.errors import GenerationError, InvalidRequestError
from inference.types import Grammar

MODEL_VOCAB = 151936  # Qwen3's logits rows; the tokenizer knows 151669 ids
IM_END = 151645
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "tags", "ok"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"]}}},
    {"type": "function", "function": {"name": "get_time"}},
]


def mask(matcher: structured.GrammarMatcher, logits: torch.Tensor) -> torch.Tensor:
    """Mask one row of `logits` the way the engine does: fill the bitmask on the host for the
    model's whole logits width, apply it in place as one tensor op."""
    rows = logits[None]
    assert structured.apply_bitmasks(rows, structured.fill_bitmasks([matcher])) is None
    return rows[0]


def sample(tokenizer, grammar: Grammar, seed: int, max_steps: int = 300) -> tuple[str, bool]:
    """Sample with random logits through a fresh matcher of `grammar`; (text, ended with
    <|im_end|>)."""
    matcher = structured.new_matcher(tokenizer, grammar)
    generator = torch.Generator().manual_seed(seed)
    output: list[int] = []
    for _ in range(max_steps):
        logits = mask(matcher, torch.randn(MODEL_VOCAB, generator=generator) * 3)
        token = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
        if token == IM_END:
            return tokenizer.decode(output), True
        matcher.consume([token])
        output.append(token)
    return tokenizer.decode(output), False


def allowed_ids(matcher: structured.GrammarMatcher) -> torch.Tensor:
    bitmask = structured.fill_bitmasks([matcher])
    allowed = structured.unpack_bitmask(bitmask, MODEL_VOCAB)
    assert allowed.shape == (1, MODEL_VOCAB) and allowed.dtype == torch.bool
    return allowed[0]


def test_llg_tokenizer_is_built_once(builtin_tokenizer):
    assert structured.llg_tokenizer(builtin_tokenizer) is structured.llg_tokenizer(builtin_tokenizer)
    assert structured.end_of_turn_id(builtin_tokenizer) == IM_END


def test_grammars_compile_once_and_every_sequence_gets_its_own_matcher(builtin_tokenizer):
    grammar = Grammar("json_schema", schema=PERSON)
    text = structured.compile_grammar(builtin_tokenizer, grammar)
    assert structured.compile_grammar(builtin_tokenizer, Grammar("json_schema", schema=PERSON)) is text
    a, b = (structured.new_matcher(builtin_tokenizer, grammar) for _ in range(2))
    assert a is not b and a.matcher is not b.matcher
    a.consume(builtin_tokenizer.encode('{"name": "', add_special_tokens=False))
    assert not torch.equal(allowed_ids(a), allowed_ids(b))  # b's state is untouched by a's tokens


@pytest.mark.parametrize("seed", range(8))
def test_json_schema_output_always_validates(builtin_tokenizer, seed):
    text, ended = sample(builtin_tokenizer, Grammar("json_schema", schema=PERSON), seed)
    assert ended, text
    jsonschema.validate(json.loads(text), PERSON)
    assert "\n" not in text and "  " not in text  # compact: fixed separators only


@pytest.mark.parametrize("seed", range(3))
def test_json_object_output_always_parses(builtin_tokenizer, seed):
    text, ended = sample(builtin_tokenizer, Grammar("json_object"), seed, max_steps=150)
    if ended:
        assert isinstance(json.loads(text), dict)
    else:  # cut off: still a prefix of an object
        assert text.startswith("{")


def test_first_step_allows_only_an_opening_brace_and_never_padding_ids(builtin_tokenizer):
    allowed = allowed_ids(structured.new_matcher(builtin_tokenizer, Grammar("json_object")))
    assert allowed.shape == (MODEL_VOCAB,)
    assert not allowed[len(builtin_tokenizer):].any()
    assert not allowed[IM_END]
    ids = allowed.nonzero().flatten().tolist()
    assert ids and all(builtin_tokenizer.decode([i]).startswith("{") for i in ids)


def test_only_end_of_turn_once_complete(builtin_tokenizer):
    matcher = structured.new_matcher(builtin_tokenizer, Grammar("json_schema", schema={"enum": ["yes"]}))
    matcher.consume(builtin_tokenizer.encode('"yes"', add_special_tokens=False))
    logits = mask(matcher, torch.zeros(MODEL_VOCAB))
    assert torch.isfinite(logits).nonzero().flatten().tolist() == [IM_END]


def test_one_fill_masks_every_row_by_its_own_matcher(builtin_tokenizer):
    fresh = structured.new_matcher(builtin_tokenizer, Grammar("json_object"))
    done = structured.new_matcher(builtin_tokenizer, Grammar("json_schema", schema={"enum": ["yes"]}))
    done.consume(builtin_tokenizer.encode('"yes"', add_special_tokens=False))
    bitmask = structured.fill_bitmasks([fresh, done])
    assert bitmask.dtype == torch.int32 and bitmask.device.type == "cpu" and bitmask.shape[0] == 2
    logits = torch.zeros(2, MODEL_VOCAB)
    structured.apply_bitmasks(logits, bitmask)
    assert torch.equal(torch.isfinite(logits[0]), allowed_ids(fresh))
    assert torch.isfinite(logits[1]).nonzero().flatten().tolist() == [IM_END]


def test_masks_logits_on_their_device_and_dtype(builtin_tokenizer):
    matcher = structured.new_matcher(builtin_tokenizer, Grammar("json_object"))
    logits = mask(matcher, torch.zeros(MODEL_VOCAB, dtype=torch.bfloat16))
    assert logits.dtype == torch.bfloat16 and torch.isinf(logits).sum() > 150000


def test_a_token_outside_the_grammar_fails_the_request(builtin_tokenizer):
    matcher = structured.new_matcher(builtin_tokenizer, Grammar("json_object"))
    bad = builtin_tokenizer.encode("hello", add_special_tokens=False)
    with pytest.raises(GenerationError):
        matcher.consume(bad)
    with pytest.raises(GenerationError):  # and the matcher stays failed
        structured.fill_bitmasks([matcher])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("choice", ["required", "get_weather", "get_time"])
def test_forced_tool_calls_are_valid_qwen3_calls(builtin_tokenizer, choice, seed):
    grammar = Grammar("tool_call", tools=tuple(TOOLS),
                      tool_name=None if choice == "required" else choice,
                      parallel=choice == "required")
    text, ended = sample(builtin_tokenizer, grammar, seed)
    assert ended, text
    blocks = (structured.TOOL_CALL_PREFIX + text).split("<tool_call>\n")[1:]
    assert blocks
    for block in blocks:
        body, _, rest = block.partition("\n</tool_call>")
        assert rest in ("", "\n")
        call = json.loads(body)
        assert set(call) == {"name", "arguments"}
        if choice != "required":
            assert call["name"] == choice
        if call["name"] == "get_weather":
            jsonschema.validate(call["arguments"], TOOLS[0]["function"]["parameters"])
        else:
            assert call["arguments"] == {}
    if choice != "required":
        assert len(blocks) == 1


def test_unknown_function_is_an_invalid_request(builtin_tokenizer):
    with pytest.raises(InvalidRequestError) as info:
        structured.new_matcher(builtin_tokenizer,
                               Grammar("tool_call", tools=tuple(TOOLS), tool_name="nope"))
    assert info.value.param == "tool_choice"


def test_unsupported_schema_is_an_invalid_request(builtin_tokenizer):
    with pytest.raises(InvalidRequestError) as info:
        structured.new_matcher(builtin_tokenizer, Grammar(
            "json_schema", schema={"type": "string", "format": "nope"}))
    assert info.value.param == "response_format.json_schema.schema"


def test_no_web_framework_is_imported():
    code = "import sys, inference.structured; assert 'fastapi' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


@pytest.mark.parametrize("schema", [
    {"$ref": "#"},
    {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    {"allOf": [{"$ref": "#"}]},
])
def test_a_schema_that_only_refers_to_itself_is_an_invalid_request(builtin_tokenizer, schema):
    # llguidance compiles these; the matcher would allow nothing but <|im_end|>.
    with pytest.raises(InvalidRequestError) as info:
        structured.new_matcher(builtin_tokenizer, Grammar("json_schema", schema=schema))
    assert info.value.param == "response_format.json_schema.schema"
    assert "refers to itself" in str(info.value)


def test_a_recursive_schema_that_can_end_is_compiled(builtin_tokenizer):
    tree = {"type": "object", "properties": {"child": {"$ref": "#"}}}
    matcher = structured.new_matcher(builtin_tokenizer, Grammar("json_schema", schema=tree))
    matcher.consume(builtin_tokenizer.encode('{"child": {"child": {}}}'))
    assert matcher.matcher.is_accepting()


def test_a_grammar_error_is_reported_by_its_first_line(builtin_tokenizer):
    matcher = structured.new_matcher(builtin_tokenizer, Grammar("json_object"))
    with pytest.raises(GenerationError) as info:
        matcher.consume(builtin_tokenizer.encode("nope"))
    assert "\n" not in str(info.value) and "<state>" not in str(info.value)
