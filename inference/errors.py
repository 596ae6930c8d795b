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


class EngineOverloadedError(EngineError):
    """The queue is full; the client should retry after `retry_after` seconds."""

    def __init__(self, queued: int, limit: int, retry_after: int = 1):
        super().__init__(
            f"The server is saturated: {queued} requests are waiting (limit {limit}). Retry shortly."
        )
        self.queued = queued
        self.limit = limit
        self.retry_after = retry_after


class ContextLengthError(EngineError):
    """The prompt leaves no room for a single output token in the context window."""

    def __init__(self, prompt_tokens: int, max_context: int, requested_tokens: int | None = None):
        message = (
            f"This model's maximum context length is {max_context} tokens, but the prompt has "
            f"{prompt_tokens} tokens, which leaves no room for any output token."
        )
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.max_context = max_context
        self.requested_tokens = requested_tokens


class InvalidRequestError(EngineError, ValueError):
    """A request the engine cannot serve as given (bad schema, unknown token id...)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class GenerationError(EngineError):
    """Generation failed inside the model step; only that request is affected."""
