"""One interface for every engine: `inference.interface.InferenceEngine` and `GenerationStream`.

The real `Engine` and the HTTP tests' `ScriptedEngine` must both satisfy it (and their streams
`GenerationStream`), member by member: present, of the same kind (a method, or data: an attribute
or a property), async where the Protocol is async, and with the same parameters. `isinstance` on
a runtime-checkable Protocol only checks that names exist; `protocol_problems` checks the rest, so
the scripted stand-in cannot drift from the engine it stands for. The Protocol itself must list
every member `api/`, `ui/` and `app.py` use.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from typing_extensions import get_protocol_members

from inference import Engine, EngineSettings, GenerationRequest, RequestStream, SamplingParams
from inference.interface import GenerationStream, InferenceEngine
from inference.types import GenerationChunk, Usage
from tests.api.test_http_layer import ScriptedEngine, ScriptedStream

ROOT = Path(__file__).resolve().parents[2]
# Read with getattr(engine, name, default) by the playground: optional, not part of the Protocol.
OPTIONAL_ENGINE_MEMBERS = {"is_builtin", "fallback_reason"}


def parameters(function) -> list[tuple[str, Any, Any]]:
    """A signature without annotations (they are strings, spelled differently per module)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def protocol_problems(protocol: type, implementation: Any) -> list[str]:
    """What keeps `implementation` (an instance, so that attributes set in `__init__` count) from
    satisfying `protocol`; empty when it does. Properties are never evaluated."""
    problems = []
    for name in sorted(get_protocol_members(protocol)):
        expected = inspect.getattr_static(protocol, name, None)
        try:
            actual = inspect.getattr_static(implementation, name)
        except AttributeError:
            problems.append(f"{name}: missing")
            continue
        if not inspect.isfunction(expected):  # data: an attribute or a property, not a method
            if inspect.isfunction(actual):
                problems.append(f"{name}: a method where the protocol has data")
            continue
        if not inspect.isfunction(actual):
            problems.append(f"{name}: not a method ({type(actual).__name__})")
            continue
        if inspect.iscoroutinefunction(expected) != inspect.iscoroutinefunction(actual):
            problems.append(f"{name}: async must be {inspect.iscoroutinefunction(expected)}")
        if parameters(expected) != parameters(actual):
            problems.append(f"{name}: parameters {inspect.signature(actual)}, "
                            f"expected {inspect.signature(expected)}")
    return problems


def scripted_stream() -> ScriptedStream:
    return ScriptedStream([GenerationChunk("req", "ok", [1], finish_reason="stop",
                                           usage=Usage(3, 1))])


# -- the implementations ------------------------------------------------------------------------


def test_the_real_engine_satisfies_the_protocol_unstarted():
    engine = Engine(EngineSettings(model="builtin"))
    assert protocol_problems(InferenceEngine, engine) == []
    # The properties are class members, readable before the model is loaded (tokenizer is not).
    for name in ("model_name", "defaults", "max_context", "tokenizer"):
        assert isinstance(inspect.getattr_static(Engine, name), property), name
    assert engine.max_context > 0 and engine.model_name == "builtin"


async def test_the_ready_engine_and_its_stream_are_instances(builtin_engine):
    assert isinstance(builtin_engine, InferenceEngine)
    assert protocol_problems(InferenceEngine, builtin_engine) == []
    stream = builtin_engine.submit(GenerationRequest(prompt="Hi",
                                                     sampling=SamplingParams(max_tokens=1)))
    assert isinstance(stream, RequestStream) and isinstance(stream, GenerationStream)
    assert protocol_problems(GenerationStream, stream) == []
    await stream.collect()


def test_the_scripted_engine_and_stream_satisfy_the_protocols():
    engine = ScriptedEngine()
    assert protocol_problems(InferenceEngine, engine) == []
    assert isinstance(engine, InferenceEngine)
    stream = scripted_stream()
    assert protocol_problems(GenerationStream, stream) == []
    assert isinstance(stream, GenerationStream)


async def test_the_scripted_engine_answers_every_call():
    engine = ScriptedEngine(scripted_stream().chunks, scripted_stream().chunks,
                            scripted_stream().chunks)
    request = GenerationRequest(messages=[{"role": "user", "content": "hi"}])
    await engine.start()
    assert isinstance(engine.submit(request), GenerationStream)
    assert isinstance(await engine.asubmit(request), GenerationStream)
    assert (await engine.generate(request)).text == "ok"
    assert engine.info()["model"] == engine.model_name == engine.health()["model"]
    assert engine.max_context > 0 and engine.defaults.max_tokens > 0
    await engine.shutdown()


# -- the check itself can fail ------------------------------------------------------------------


class Drifted:
    state, error, started_at, is_fallback = "ready", None, 0.0, False
    model_name, tokenizer, defaults, max_context = "x", None, None, 1

    async def start(self): ...

    async def drain(self, timeout): ...

    def shutdown(self): ...  # not async

    def submit(self, request): ...

    async def asubmit(self, request, priority=0): ...  # an extra parameter

    async def generate(self, prompt): ...  # renamed parameter

    def tokenize(self, request): ...

    def info(self): ...

    health = "ok"  # data where a method belongs

    def add_listener(self, listener): ...


def test_protocol_problems_names_each_drift():
    problems = protocol_problems(InferenceEngine, Drifted())
    assert [p.split(":")[0] for p in problems] == ["asubmit", "generate", "health", "shutdown"]
    assert isinstance(Drifted(), InferenceEngine)  # what isinstance alone would have let through
    del Drifted.info
    try:
        assert "info: missing" in protocol_problems(InferenceEngine, Drifted())
    finally:
        Drifted.info = lambda self: {}


# -- the protocol covers what the API and the UI use ----------------------------------------------


def used_members(pattern: str) -> set[str]:
    sources = [ROOT / "app.py", *(ROOT / "api").rglob("*.py"), *(ROOT / "ui").rglob("*.py")]
    return {m for path in sources for m in re.findall(pattern, path.read_text())}


@pytest.mark.parametrize("protocol, pattern, optional", [
    (InferenceEngine, r"\bengine\.([A-Za-z_]\w*)", set()),
    (InferenceEngine, r"getattr\((?:[\w.]*\.)?engine, \"(\w+)\"", OPTIONAL_ENGINE_MEMBERS),
    (GenerationStream, r"\bstream(?:s\[\w+\])?\.([A-Za-z_]\w*)", set()),
], ids=["engine", "engine-getattr", "stream"])
def test_protocol_lists_every_member_the_api_and_ui_use(protocol, pattern, optional):
    used = used_members(pattern)
    assert used  # the pattern finds the uses
    assert used - optional <= set(get_protocol_members(protocol)), used - optional - set(
        get_protocol_members(protocol))
