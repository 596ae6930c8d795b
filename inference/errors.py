"""Typed errors raised by the inference layer.

The HTTP layer maps each class to a status code and an OpenAI error body in one place
(`api/errors.py`); the UI turns them into readable messages. Nothing here knows about HTTP.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class for every error the engine raises on purpose."""


class ModelLoadError(EngineError):
    """The model could not be loaded; the message names the cause and the way out."""


class ModelUnavailableError(ModelLoadError):
    """The model cannot be had here (no network and not cached, wrong id): a fallback may apply."""


class QuantizationError(ModelLoadError):
    """The loaded model's linear layers are not bitsandbytes 4-bit modules."""


class ModelNotLoadedError(EngineError):
    """A request arrived while the model is still loading or after loading failed."""

    def __init__(self, message: str = "The model is not loaded yet.", state: str = "loading"):
        super().__init__(message)
        self.state = state


class EngineStoppingError(EngineError):
    """A request arrived while the server is shutting down (draining, or stopped): refused at once."""

    def __init__(self, message: str = "The server is shutting down and accepts no new requests; "
                 "retry later."):
        super().__init__(message)


class EngineOverloadedError(EngineError):
    """The queue is full; the client should retry after `retry_after` seconds (the scheduler's
    estimate of the wait, from its queue depth and recent completion rate)."""

    def __init__(self, queued: int, limit: int, retry_after: int = 1):
        super().__init__(
            f"The server is saturated: {queued} requests are waiting (limit {limit}). Retry shortly."
        )
        self.queued = queued
        self.limit = limit
        self.retry_after = retry_after


class ContextLengthError(EngineError):
    """The prompt leaves no room for a single output token in the context window.

    `prompt_tokens` is exact, or a lower bound when `at_least`: a prompt far over the window is
    refused once enough of it is counted, without tokenizing the rest (`inference.prompt_bounds`).
    """

    def __init__(self, prompt_tokens: int, max_context: int, requested_tokens: int | None = None,
                 *, at_least: bool = False):
        count = f"at least {prompt_tokens}" if at_least else str(prompt_tokens)
        message = (
            f"This model's maximum context length is {max_context} tokens, but the prompt has "
            f"{count} tokens, which leaves no room for any output token."
        )
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.max_context = max_context
        self.requested_tokens = requested_tokens
        self.at_least = at_least


class InvalidRequestError(EngineError, ValueError):
    """A request the engine cannot serve as given (bad schema, unknown token id...)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class GenerationError(EngineError):
    """Generation failed inside the model step; only that request is affected."""
