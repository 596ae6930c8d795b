"""Per-request isolation: concurrent requests with different grammars, free text and sampling
parameters each get exactly what they asked for, as if run alone.

Grammars are data (`Grammar`); the engine keeps one matcher per sequence. Several requests with the
same grammar submitted together (what the API does for `n` > 1) must not share one. Random weights
never close a JSON string by themselves, so grammar requests carry a bias towards `"` and `}`
(a batch-shaped logits processor, applied after the grammar's mask).

The tests that compare a request amid others with its solo run token for token take `cpu_engine`:
that equality is the CPU step's contract; on a GPU the kernels differ by batch size and round
differently, so a sampled reply there can part from its solo run at a near tie.
"""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import pytest

from inference import GenerationRequest, SamplingParams
from inference.types import TOOL_CALL_PREFIX, Grammar
from tests.schemas import PERSON, TOOLS, WEATHER

from .helpers import BiasTokens, chat, closing_token_ids

CALL_BLOCK = re.compile(r"^(?:<tool_call>\n)?(\{.*?\})\n</tool_call>$", re.S)
LIMIT = 160  # room for every grammar to finish; they stop at the end of the JSON


def grammar_request(grammar: Grammar, seed: int, bias, content: str = "Answer in JSON.",
                    ) -> GenerationRequest:
    tool_call = grammar.kind == "tool_call"
    return GenerationRequest(
        messages=chat(content),
        tools=list(TOOLS) if tool_call else None,
        assistant_prefix=TOOL_CALL_PREFIX if tool_call else "",
        sampling=SamplingParams(max_tokens=LIMIT, seed=seed, grammar=grammar,
                                logits_processors=[bias]),
    )


def tool_calls(text: str) -> list[dict]:
    """The calls of a forced tool-call output (it starts inside the first `<tool_call>`)."""
    blocks = (TOOL_CALL_PREFIX + text).split("\n<tool_call>\n")
    calls = []
    for index, block in enumerate(blocks):
        match = CALL_BLOCK.match(block if index == 0 else TOOL_CALL_PREFIX + block)
        assert match, f"not a closed <tool_call> block: {block!r}"
        calls.append(json.loads(match.group(1)))
    return calls


def check(kind: str, result) -> None:
    assert result.finish_reason == "stop", (kind, result.finish_reason, result.error, result.text)
    if kind == "person":
        jsonschema.validate(json.loads(result.text), PERSON)
    elif kind == "weather":
        jsonschema.validate(json.loads(result.text), WEATHER)
    elif kind == "object":
        assert isinstance(json.loads(result.text), dict)
    else:
        calls = tool_calls(result.text)
        assert len(calls) == 1  # not parallel
        (call,) = calls
        assert set(call) == {"name", "arguments"} and call["name"] == "get_weather"
        jsonschema.validate(call["arguments"], WEATHER)


GRAMMARS = {
    "person": Grammar("json_schema", schema=PERSON),
    "weather": Grammar("json_schema", schema=WEATHER),
    "object": Grammar("json_object"),
    "call": Grammar("tool_call", tools=tuple(TOOLS), tool_name="get_weather", parallel=False),
}


@pytest.fixture(scope="module")
def bias(builtin_tokenizer):
    return BiasTokens(closing_token_ids(builtin_tokenizer))


def free(content: str, **sampling) -> GenerationRequest:
    return GenerationRequest(messages=chat(content),
                             sampling=SamplingParams(max_tokens=10, **sampling))


async def test_different_grammars_and_free_text_side_by_side(cpu_engine, bias):
    kinds = list(GRAMMARS)
    texts = [free("Free text one.", temperature=0), free("Free text two.", seed=8, temperature=1.0)]
    solo_texts = [await cpu_engine.generate(r) for r in texts]
    texts = [free("Free text one.", temperature=0), free("Free text two.", seed=8, temperature=1.0)]
    requests = [grammar_request(GRAMMARS[k], seed=i, bias=bias) for i, k in enumerate(kinds)]
    results = await asyncio.gather(*(cpu_engine.generate(r) for r in requests + texts))
    for kind, result in zip(kinds, results[:len(kinds)], strict=True):
        check(kind, result)
    # Free text beside grammars is untouched by them: the same tokens as alone.
    together = results[len(kinds):]
    assert [r.token_ids for r in together] == [r.token_ids for r in solo_texts]
    assert all(r.finish_reason == "length" for r in together)
    assert not any(r.text.lstrip().startswith("{") for r in together)


@pytest.mark.parametrize("kind", ["person", "call"])
async def test_same_grammar_submitted_together_like_n_choices(builtin_engine, bias, kind):
    # What the API does for n > 1: one request per choice, same grammar, seed + index.
    streams = [await builtin_engine.asubmit(grammar_request(GRAMMARS[kind], seed=20 + i, bias=bias))
               for i in range(3)]
    results = await asyncio.gather(*(s.collect() for s in streams))
    for result in results:
        check(kind, result)
    assert len({r.text for r in results}) > 1  # the seeds differ, so do the choices


SIDE_BY_SIDE = [
    dict(seed=1, temperature=1.0, top_k=0, top_p=1.0),
    dict(seed=2, temperature=0.7, top_k=20, top_p=0.8),
    dict(seed=3, temperature=1.3, top_k=0, top_p=0.95, min_p=0.05),
    dict(temperature=0),
    dict(seed=4, temperature=0.9, repetition_penalty=1.3, presence_penalty=0.5,
         frequency_penalty=0.5),
    dict(seed=5, temperature=1.0, top_k=50, logprobs=2),
    dict(seed=6, temperature=1.0, top_k=0, top_p=1.0, stop=["e"]),
]


async def test_seeds_and_parameters_side_by_side_equal_their_solo_runs(cpu_engine):
    def requests():
        return [GenerationRequest(messages=chat(f"Side by side {i}."),
                                  sampling=SamplingParams(max_tokens=10, **params))
                for i, params in enumerate(SIDE_BY_SIDE)]

    solo = [await cpu_engine.generate(r) for r in requests()]
    together = await asyncio.gather(*(cpu_engine.generate(r) for r in requests()))
    for params, alone, batched in zip(SIDE_BY_SIDE, solo, together, strict=True):
        assert batched.token_ids == alone.token_ids, params
        assert batched.text == alone.text and batched.finish_reason == alone.finish_reason
    assert len({tuple(r.token_ids) for r in solo}) == len(solo)  # the parameters matter
