"""Structured output: grammars that keep generation inside a JSON schema or a tool call (llguidance).

The API passes a `Grammar` as data; the engine compiles it here with its own tokenizer (cached) and
keeps one `GrammarMatcher` per sequence. Each step the masks of every constrained row are filled in
one call and applied on the device as one tensor op; once the grammar is complete only the
end-of-turn token (`<|im_end|>`) remains. The result always
parses, and for a schema always validates, as long as `max_tokens` leaves room to finish.

Whitespace is fixed, never flexible: `", "` between items and `": "` after keys, exactly what Qwen3's
chat template writes (`tojson`), and no newlines or indentation. A free choice of whitespace lets a
weak (or random) model loop on spaces forever; fixed separators keep every token productive.

The llguidance tokenizer takes about two seconds to build, so it is built once per HF tokenizer and
cached. Nothing here knows about HTTP: errors are `InvalidRequestError`s naming the parameter.
A grammar that matches nothing at all (a schema that only refers to itself, `{"$ref": "#"}` or a
`$defs` cycle, which llguidance compiles without complaint) is refused when it is compiled, as is a
schema nested too deeply to hash or compile; a grammar error during generation is reported by its
first line, llguidance's state dump going to the log only.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from typing import Any

import llguidance
import llguidance.hf
import llguidance.torch
import torch

from inference.errors import GenerationError, InvalidRequestError
from inference.types import TOOL_CALL_PREFIX, Grammar  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

END_OF_TURN = "<|im_end|>"
TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"

JSON_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}

_cache_lock = threading.Lock()
_llg_tokenizers: weakref.WeakKeyDictionary[Any, llguidance.LLTokenizer] = (
    weakref.WeakKeyDictionary()
)


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


class GrammarMatcher:
    """One sequence's position in its grammar (an llguidance matcher). Stateful: one per sequence.

    The engine fills the masks of all constrained rows of a step in one call (`fill_bitmasks`),
    applies them on the device as one tensor op (`apply_bitmasks`), then feeds each matcher the
    token its row sampled (`consume`).
    """

    def __init__(self, tokenizer: llguidance.LLTokenizer, grammar: str, *, name: str = "grammar"):
        self.name = name
        self.vocab_size = tokenizer.vocab_size  # the tokenizer's ids; the model may pad past them
        self.matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise InvalidRequestError(f"Invalid {name}: {first_line(self.matcher.get_error())}",
                                      param=name)

    def consume(self, token_ids: list[int]) -> None:
        if token_ids:
            self.matcher.consume_tokens(list(token_ids))
        self.check()

    def check(self) -> None:
        if self.matcher.is_error():
            error = self.matcher.get_error()
            logger.debug("%s failed: %s", self.name, error)
            raise GenerationError(f"{self.name}: {first_line(error)}")


def first_line(error: str) -> str:
    """llguidance's errors go on with a dump of the parser state and the grammar: not for clients."""
    return error.strip().splitlines()[0] if error.strip() else "grammar error"


_executor: llguidance.LLExecutor | None = None


def fill_bitmasks(matchers: list[GrammarMatcher]) -> torch.Tensor:
    """The allowed-token bitmasks of every matcher, one row each (int32 words of 32 tokens over
    the tokenizer's ids), computed in one parallel llguidance call on the host."""
    global _executor
    if _executor is None:
        _executor = llguidance.LLExecutor()
    for m in matchers:
        m.check()
    vocab_size = matchers[0].vocab_size
    bitmask = torch.full((len(matchers), (vocab_size + 31) // 32), -1, dtype=torch.int32)
    llguidance.torch.fill_next_token_bitmask_par(
        _executor, [(m.matcher, i) for i, m in enumerate(matchers)], bitmask)
    return bitmask


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Bool (rows, vocab_size): True where a token is allowed. Ids beyond the mask are not."""
    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    bits = ((bitmask.unsqueeze(-1) >> shifts) & 1).flatten(1).bool()
    if bits.shape[1] >= vocab_size:
        return bits[:, :vocab_size]
    pad = torch.zeros(bits.shape[0], vocab_size - bits.shape[1], dtype=torch.bool,
                      device=bits.device)
    return torch.cat([bits, pad], dim=1)


def apply_bitmasks(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """Set to -inf, in place, every logit whose token the row's grammar forbids."""
    allowed = unpack_bitmask(bitmask.to(logits.device, non_blocking=True), logits.shape[-1])
    logits.masked_fill_(~allowed, float("-inf"))


def _check(tokenizer: llguidance.LLTokenizer, grammar: str, param: str) -> str:
    error = llguidance.LLMatcher.validate_grammar(grammar, tokenizer)
    if error and not error.startswith("WARNING"):
        raise InvalidRequestError(f"Unsupported schema in `{param}`: {first_line(error)}",
                                  param=param)
    _check_matches_something(tokenizer, grammar, param)
    return grammar


def _check_matches_something(tokenizer: llguidance.LLTokenizer, grammar: str, param: str) -> None:
    """Refuse a grammar whose language is empty: not complete at the start, and allowing no token
    but the end of turn. A schema that only refers to itself (`{"$ref": "#"}`, a `$defs` cycle) is
    such a grammar; served, it would end every answer empty, or fail it."""
    matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
    if matcher.is_error():
        raise InvalidRequestError(
            f"Unsupported schema in `{param}`: {first_line(matcher.get_error())}", param=param)
    if matcher.is_accepting():
        return
    allowed = int.from_bytes(matcher.compute_bitmask(), "little")
    for eos in tokenizer.eos_tokens:
        allowed &= ~(1 << eos)
    if not allowed:
        raise InvalidRequestError(
            f"The schema in `{param}` allows no value at all: it refers to itself with nothing in "
            "between (such as {\"$ref\": \"#\"} or a cycle of `$defs`).", param=param)


def json_schema_grammar(schema: dict[str, Any], *, lenient: bool = False) -> str:
    """The llguidance grammar of compact JSON that validates against `schema`."""
    if not isinstance(schema, dict):
        raise InvalidRequestError("A JSON schema must be an object.", param="response_format")
    options = {**JSON_OPTIONS, "lenient": lenient}
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=options)
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(f"Invalid JSON schema: {exc}", param="response_format") from exc


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


_grammar_cache: dict[tuple[int, Grammar], str] = {}
_GRAMMAR_CACHE_SIZE = 256


def grammar_name(grammar: Grammar) -> str:
    return "tool_choice" if grammar.kind == "tool_call" else "response_format"


def compile_grammar(tokenizer: Any, grammar: Grammar) -> str:
    """The llguidance grammar of a `Grammar`, validated for this tokenizer; cached, since the same
    schema or tools come back request after request. Raises `InvalidRequestError` naming the
    request parameter at fault."""
    try:
        return _compile_grammar(tokenizer, grammar)
    except RecursionError as exc:  # hashing or serializing a schema nested ~1000 deep
        param = "tools" if grammar.kind == "tool_call" else "response_format"
        raise InvalidRequestError(f"The schema in `{param}` is nested too deeply.",
                                  param=param) from exc


def _compile_grammar(tokenizer: Any, grammar: Grammar) -> str:
    llt = llg_tokenizer(tokenizer)
    key = (id(llt), grammar)
    with _cache_lock:
        cached = _grammar_cache.get(key)
    if cached is not None:
        return cached
    if grammar.kind == "tool_call":
        if not grammar.tools:
            raise InvalidRequestError("tool_choice needs `tools`.", param="tools")
        text = _check(llt, tool_call_grammar(list(grammar.tools), grammar.tool_name,
                                             parallel=grammar.parallel), "tools")
    else:
        schema = {"type": "object"} if grammar.kind == "json_object" else grammar.schema
        text = _check(llt, json_schema_grammar(schema), "response_format.json_schema.schema")
    with _cache_lock:
        if len(_grammar_cache) >= _GRAMMAR_CACHE_SIZE:
            _grammar_cache.pop(next(iter(_grammar_cache)))
        _grammar_cache[key] = text
    return text


def new_matcher(tokenizer: Any, grammar: Grammar) -> GrammarMatcher:
    """A fresh matcher for one sequence (its grammar compiled once and cached)."""
    return GrammarMatcher(llg_tokenizer(tokenizer), compile_grammar(tokenizer, grammar),
                          name=grammar_name(grammar))
