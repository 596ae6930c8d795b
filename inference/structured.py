"""Structured output: logits processors that keep generation inside a grammar (llguidance).

`response_format` (a JSON schema or any JSON object) and forced tool calls become an llguidance
grammar; a `GrammarLogitsProcessor` masks, at every step, the tokens the grammar cannot accept, and
once the grammar is complete only the end-of-turn token (`<|im_end|>`) remains. The result always
parses, and for a schema always validates, as long as `max_tokens` leaves room to finish.

Whitespace is fixed, never flexible: `", "` between items and `": "` after keys, exactly what Qwen3's
chat template writes (`tojson`), and no newlines or indentation. A free choice of whitespace lets a
weak (or random) model loop on spaces forever; fixed separators keep every token productive.

The llguidance tokenizer takes about two seconds to build, so it is built once per HF tokenizer and
cached. Nothing here knows about HTTP: errors are `InvalidRequestError`s naming the parameter.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from typing import Any, Literal

import llguidance
import llguidance.hf
import torch

from inference.errors import GenerationError, InvalidRequestError

logger = logging.getLogger(__name__)

END_OF_TURN = "<|im_end|>"
TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
# Forced tool calls: the prompt ends with this prefix, so the output starts inside the first call.
TOOL_CALL_PREFIX = TOOL_CALL_START + "\n"

JSON_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}

_cache_lock = threading.Lock()
_llg_tokenizers: weakref.WeakKeyDictionary[Any, llguidance.LLTokenizer] = (
    weakref.WeakKeyDictionary()
)
_BIT_SHIFTS = torch.arange(32, dtype=torch.int32)


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that ends an assistant turn: `<|im_end|>` for Qwen3, else the tokenizer's EOS."""
    token_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
        return token_id
    return int(tokenizer.eos_token_id)


def llg_tokenizer(tokenizer: Any) -> llguidance.LLTokenizer:
    """The llguidance view of an HF fast tokenizer, built once and cached (it takes ~2 s)."""
    with _cache_lock:
        cached = _llg_tokenizers.get(tokenizer)
        if cached is None:
            logger.info("Building the llguidance tokenizer (once per tokenizer)")
            cached = llguidance.hf.from_tokenizer(tokenizer, eos_token=end_of_turn_id(tokenizer))
            _llg_tokenizers[tokenizer] = cached
        return cached


class GrammarLogitsProcessor:
    """Masks every token the grammar cannot accept next. One instance per request: it is stateful.

    Follows the engine's `LogitsProcessor` protocol: it is called with all the request's output ids
    so far, feeds the new ones to the matcher, and sets the logits of forbidden tokens to -inf.
    Ids beyond the tokenizer's vocabulary (the model's padded rows) are always forbidden.
    """

    def __init__(self, tokenizer: llguidance.LLTokenizer, grammar: str, *, name: str = "grammar"):
        self.name = name
        self._vocab_size = tokenizer.vocab_size
        self._matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if self._matcher.is_error():
            raise InvalidRequestError(f"Invalid {name}: {self._matcher.get_error()}")
        self._consumed = 0

    def allowed_tokens(self, vocab_size: int) -> torch.Tensor:
        """A bool tensor over `vocab_size` ids: True where the grammar allows the token next."""
        words = torch.frombuffer(bytearray(self._matcher.compute_bitmask()), dtype=torch.int32)
        bits = ((words.unsqueeze(-1) >> _BIT_SHIFTS) & 1).flatten().bool()
        allowed = torch.zeros(vocab_size, dtype=torch.bool)
        n = min(vocab_size, self._vocab_size, bits.numel())
        allowed[:n] = bits[:n]
        return allowed

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        new_ids = output_ids[self._consumed :]
        if new_ids:
            self._matcher.consume_tokens(list(new_ids))
            self._consumed = len(output_ids)
        if self._matcher.is_error():
            raise GenerationError(f"{self.name}: {self._matcher.get_error()}")
        allowed = self.allowed_tokens(logits.shape[-1]).to(logits.device)
        logits.masked_fill_(~allowed, float("-inf"))
        return logits


def _check(tokenizer: llguidance.LLTokenizer, grammar: str, param: str) -> str:
    error = llguidance.LLMatcher.validate_grammar(grammar, tokenizer)
    if error and not error.startswith("WARNING"):
        raise InvalidRequestError(f"Unsupported schema in `{param}`: {error}", param=param)
    return grammar


def json_schema_grammar(schema: dict[str, Any], *, lenient: bool = False) -> str:
    """The llguidance grammar of compact JSON that validates against `schema`."""
    if not isinstance(schema, dict):
        raise InvalidRequestError("A JSON schema must be an object.", param="response_format")
    options = {**JSON_OPTIONS, "lenient": lenient}
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=options)
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(f"Invalid JSON schema: {exc}", param="response_format") from exc


def json_schema_processor(tokenizer: Any, schema: dict[str, Any]) -> GrammarLogitsProcessor:
    """Constrains the output to compact JSON valid against `schema` (response_format json_schema)."""
    llt = llg_tokenizer(tokenizer)
    param = "response_format.json_schema.schema"
    grammar = _check(llt, json_schema_grammar(schema), param)
    return GrammarLogitsProcessor(llt, grammar, name="response_format")


def json_object_processor(tokenizer: Any) -> GrammarLogitsProcessor:
    """Constrains the output to one compact JSON object (response_format json_object)."""
    return json_schema_processor(tokenizer, {"type": "object"})


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    return tool.get("function", tool) if isinstance(tool, dict) else {}


def closed_object(parameters: dict[str, Any]) -> dict[str, Any]:
    """A parameters schema that allows only the declared arguments, unless it says otherwise.

    JSON schema allows unknown keys by default; a call to a function never needs them, and without
    this bound a weak model can keep inventing keys until max_tokens.
    """
    if parameters.get("type") == "object" and "additionalProperties" not in parameters:
        return {**parameters, "properties": parameters.get("properties", {}),
                "additionalProperties": False}
    return parameters


def tool_call_schema(tools: list[dict[str, Any]], name: str | None = None) -> dict[str, Any]:
    """The JSON schema of one Qwen3 tool call body: `{"name": ..., "arguments": {...}}`.

    `tools` are OpenAI tool definitions; with `name`, only that function is allowed.
    """
    variants = []
    for tool in tools:
        function = _function(tool)
        if name is not None and function.get("name") != name:
            continue
        parameters = closed_object(function.get("parameters") or {"type": "object"})
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": function.get("name")}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    if not variants:
        raise InvalidRequestError(
            f"tool_choice names the function {name!r}, which is not in `tools`.",
            param="tool_choice",
        )
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return {"x-guidance": {**JSON_OPTIONS, "lenient": True}, **schema}


def tool_call_grammar(
    tools: list[dict[str, Any]], name: str | None = None, *, parallel: bool = True
) -> str:
    """Lark grammar for the output after the `<tool_call>\\n` prefix: one call (or, when
    `parallel`, one or more), each closed by `</tool_call>`, in Qwen3's exact layout."""
    body = json.dumps(tool_call_schema(tools, name), ensure_ascii=False)
    more = ' ("\\n" <tool_call> "\\n" call "\\n" </tool_call>)*' if parallel else ""
    lark = f'start: call "\\n" </tool_call>{more}\ncall: %json {body}\n'
    return llguidance.LLMatcher.grammar_from_lark(lark)


def tool_call_processor(
    tokenizer: Any,
    tools: list[dict[str, Any]],
    tool_choice: Literal["required"] | str,
    *,
    parallel: bool = True,
) -> GrammarLogitsProcessor:
    """Constrains the output to valid Qwen3 tool calls (tool_choice "required" or a function name).

    The prompt must end with `TOOL_CALL_PREFIX` (the engine's `assistant_prefix`): the grammar
    starts inside the first call, so the model cannot answer in prose instead.
    """
    if not tools:
        raise InvalidRequestError("tool_choice needs `tools`.", param="tools")
    name = None if tool_choice == "required" else tool_choice
    llt = llg_tokenizer(tokenizer)
    grammar = _check(llt, tool_call_grammar(tools, name, parallel=parallel), "tools")
    return GrammarLogitsProcessor(llt, grammar, name="tool_choice")
