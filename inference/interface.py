"""The engine's interface, as the API, the playground and `app.py` use it: one `InferenceEngine`
that takes `GenerationRequest`s and returns `GenerationStream`s.

`Engine` implements it; so can a stand-in (the HTTP tests' scripted engine) or a future engine,
without either side importing the other. The members are exactly those used outside `inference/`;
the tests compare them, signatures included, against every implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, runtime_checkable

from .types import (
    FinishedRequest,
    GenerationChunk,
    GenerationRequest,
    GenerationResult,
    SamplingDefaults,
)


@runtime_checkable
class GenerationStream(Protocol):
    """One submitted request: its prompt as the engine saw it, and its chunks as they come.
    Iterate it for `GenerationChunk`s (the last one has `finish_reason`), or `collect()` it;
    leaving the loop early, or `cancel()`, ends the request."""

    request_id: str
    prompt_tokens: int
    prompt_token_ids: list[int]
    prompt_text: str | None  # the rendered chat prompt; None for a token-id prompt
    max_tokens: int  # after clipping to the context window

    def cancel(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[GenerationChunk]: ...

    async def collect(self) -> GenerationResult: ...


@runtime_checkable
class InferenceEngine(Protocol):
    """The model server: lifecycle, facts and requests."""

    state: str  # "loading", "ready", "error", "stopping" (draining) or "stopped"
    error: str | None
    started_at: float
    is_fallback: bool

    @property
    def model_name(self) -> str: ...

    @property
    def tokenizer(self) -> Any: ...

    @property
    def defaults(self) -> SamplingDefaults: ...

    @property
    def max_context(self) -> int: ...

    async def start(self) -> None: ...

    async def drain(self, timeout: float) -> None: ...

    async def shutdown(self) -> None: ...

    def submit(self, request: GenerationRequest) -> GenerationStream: ...

    async def asubmit(self, request: GenerationRequest) -> GenerationStream: ...

    async def generate(self, request: GenerationRequest) -> GenerationResult: ...

    def tokenize(self, request: GenerationRequest) -> list[int]: ...

    def info(self) -> dict[str, Any]: ...

    def health(self) -> dict[str, Any]: ...

    def add_listener(self, listener: Callable[[FinishedRequest], None]) -> Callable[[], None]: ...


__all__ = ["GenerationStream", "InferenceEngine"]
