"""What the playground's buttons do: chat and completion streams straight from the engine, the page's
state on load, and the model report.

`Playground` wraps the one shared engine; its async generators are Gradio event handlers but import
no gradio, so they are tested against the real engine without a browser. A generator closed early
(the Stop button, a closed tab) cancels its engine request, which frees it within one decode step.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from inference.errors import EngineError
from inference.types import GenerationRequest, SamplingDefaults

from . import snippets
from .conversation import (
    THINK_OPEN,
    Message,
    error_text,
    format_stats,
    reply_messages,
    sampling_params,
    to_engine_messages,
)
from .model_report import model_markdown, status_markdown

logger = logging.getLogger(__name__)

# Upper end of the max_tokens slider; the engine clips to the context window anyway.
MAX_TOKENS_SLIDER = 8192


@dataclass
class PageState:
    """What the page shows on load: sampling defaults, banners, model report, API snippets."""

    defaults: SamplingDefaults
    max_tokens_limit: int
    status: str
    banner: str  # empty when there is nothing to warn about
    model: str
    api_intro: str
    curl_chat: str
    curl_generate: str
    openai_python: str


def _log_unexpected(exc: Exception) -> None:
    # Typed engine errors are expected (too long, busy, loading); anything else is a bug to log.
    if not isinstance(exc, EngineError):
        logger.error("submitting a request failed", exc_info=exc)


class Playground:
    """The UI's handle on the engine."""

    def __init__(self, engine: Any, *, api_key: bool = False, root_path: str = "", host: str = ""):
        self.engine = engine
        self.api_key = api_key
        self.root_path = root_path
        self.host = host

    async def _submit(self, request: GenerationRequest, temperature: float, top_p: float,
                      top_k: int, max_tokens: int) -> tuple[Any, str | None]:
        """Submit with the sliders' sampling; (stream, None), or (None, a readable error)."""
        request.sampling = sampling_params(temperature, top_p, top_k, max_tokens)
        request.source = "ui"
        try:
            return await self.engine.asubmit(request), None
        except Exception as exc:
            _log_unexpected(exc)
            return None, error_text(exc)

    # -- chat -------------------------------------------------------------------------------------

    async def chat(
        self,
        history: list[Message],
        system_prompt: str,
        temperature: float,
        top_p: float,
        top_k: int,
        max_tokens: int,
    ) -> AsyncIterator[list[Message]]:
        """Answer the history's last user message, yielding the whole history as the reply grows."""
        history = list(history or [])
        messages = to_engine_messages(history, system_prompt or "")
        if not messages or messages[-1]["role"] != "user":
            yield history
            return
        stream, failure = await self._submit(
            GenerationRequest(messages=messages), temperature, top_p, top_k, max_tokens
        )
        if stream is None:
            yield history + reply_messages("", error=failure)
            return
        opened = (stream.prompt_text or "").rstrip().endswith(THINK_OPEN)
        text = ""
        try:
            async for chunk in stream:
                text += chunk.text
                if chunk.finish_reason is None:
                    yield history + reply_messages(text, opened_reasoning=opened)
                    continue
                error = None
                if chunk.finish_reason == "error":
                    error = f"Generation failed: {chunk.error or 'unknown error'}"
                stats = format_stats(chunk.usage, chunk.timings, chunk.finish_reason)
                yield history + reply_messages(
                    text, opened_reasoning=opened, stats=stats, error=error
                )
        except Exception as exc:  # shown in the chat; the server keeps serving
            logger.exception("chat generation failed")
            yield history + reply_messages(text, opened_reasoning=opened, error=error_text(exc))
        finally:
            stream.cancel()

    # -- completion -------------------------------------------------------------------------------

    async def complete(
        self, prompt: str, temperature: float, top_p: float, top_k: int, max_tokens: int
    ) -> AsyncIterator[tuple[str, str]]:
        """Continue a raw prompt (no chat template), yielding (text so far, statistics line)."""
        if not (prompt or "").strip():
            yield "", "Enter a prompt first."
            return
        stream, failure = await self._submit(
            GenerationRequest(prompt=prompt), temperature, top_p, top_k, max_tokens
        )
        if stream is None:
            yield "", f"⚠️ {failure}"
            return
        text = ""
        try:
            async for chunk in stream:
                text += chunk.text
                if chunk.finish_reason is None:
                    yield text, "Generating…"
                    continue
                summary, details = format_stats(chunk.usage, chunk.timings, chunk.finish_reason)
                if chunk.finish_reason == "error":
                    summary = f"⚠️ Generation failed: {chunk.error or 'unknown error'}"
                yield text, f"{summary}  \n{details}" if details else summary
        except Exception as exc:
            logger.exception("completion failed")
            yield text, f"⚠️ {error_text(exc)}"
        finally:
            stream.cancel()

    # -- page state -------------------------------------------------------------------------------

    def page_state(self, headers: Mapping[str, str], scheme: str = "http") -> PageState:
        """Everything the page fills in on load; the engine may still be loading."""
        ready = getattr(self.engine, "state", None) == "ready"
        defaults = self.engine.defaults if ready else SamplingDefaults()
        limit = MAX_TOKENS_SLIDER
        if ready and self.engine.max_context:
            limit = min(MAX_TOKENS_SLIDER, int(self.engine.max_context) - 1)
        url = snippets.base_url(headers, scheme, self.host, self.root_path)
        model = getattr(self.engine, "model_name", None) or "default"
        return PageState(
            defaults=defaults,
            max_tokens_limit=max(1, limit),
            status=status_markdown(self.engine),
            banner=self.banner(),
            model=self.model_report(),
            api_intro=snippets.api_intro(url, self.api_key),
            curl_chat=snippets.curl_chat(url, model, self.api_key),
            curl_generate=snippets.curl_generate(url, self.api_key),
            openai_python=snippets.openai_python(url, model, self.api_key),
        )

    def banner(self) -> str:
        """The warning across the top: fallback to the built-in model, or a failed load."""
        engine = self.engine
        if getattr(engine, "state", None) == "error":
            return f"⛔ **The model could not be loaded.** {engine.error or ''}".strip()
        if getattr(engine, "is_fallback", False):
            reason = getattr(engine, "fallback_reason", None) or "it could not be loaded"
            return (
                "⚠️ **Running the built-in test model instead of the requested one.** "
                f"{reason} The built-in model has random weights: its replies are noise. "
                "Start the server with a model that is cached or in a local folder to get real "
                "answers."
            )
        return ""

    def model_report(self) -> str:
        """The Model tab's report from `engine.info()`."""
        if getattr(self.engine, "state", None) != "ready":
            return status_markdown(self.engine)
        try:
            info = self.engine.info()
        except Exception as exc:
            logger.exception("engine.info() failed")
            return f"⚠️ Model info is not available: {exc}"
        return model_markdown(info, self.engine)
