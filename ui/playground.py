"""What the playground's buttons do: chat and completion streams straight from the engine, Stop,
the page's state on load, and the model report.

`Playground` wraps the one shared engine; its async generators are Gradio event handlers but import
no gradio, so they are tested against the real engine without a browser. Stop cancels the engine
request of the page that asked (`stop(session)`): the stream then ends with finish reason
"cancelled", and the reply still gets its statistics, marked as stopped. A generator closed early
(Undo, a closed tab) cancels its request too, which frees it within one decode step. Updates to
the page are paced (`pacing.paced`): a long reply must not freeze the browser that renders it.
"""

from __future__ import annotations

import html
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from inference.errors import EngineError
from inference.reasoning import prompt_opens_reasoning
from inference.types import GenerationRequest, SamplingDefaults

from . import snippets
from .conversation import Message, error_text, sampling_params, to_engine_messages
from .model_report import model_markdown, status_markdown
from .pacing import paced, update_interval
from .reply import Reply, format_stats

logger = logging.getLogger(__name__)

def _ends(chunk) -> bool:
    return chunk.finish_reason is not None


# Upper end of the max_tokens slider; the engine clips to the context window anyway.
MAX_TOKENS_SLIDER = 8192


@dataclass
class PageState:
    """What the page shows on load: sampling defaults, banners, model report, API snippets."""

    defaults: SamplingDefaults
    max_tokens_limit: int
    status: str
    banner: str  # HTML; empty when there is nothing to warn about
    model: str
    api_intro: str
    curl_chat: str
    curl_generate: str
    openai_python: str
    thinking: bool  # the model's chat template has Qwen3's `enable_thinking` switch


def _log_unexpected(exc: Exception) -> None:
    # Typed engine errors are expected (too long, busy, loading); anything else is a bug to log.
    if not isinstance(exc, EngineError):
        logger.error("submitting a request failed", exc_info=exc)


class Running:
    """A page's reply in progress: its stream once submitted, and whether the page stopped it."""

    def __init__(self):
        self.stream: Any = None
        self.stopped = False

    def attach(self, stream: Any) -> None:
        self.stream = stream
        if self.stopped:  # Stop came while the request was being submitted
            stream.cancel()

    def stop(self) -> None:
        self.stopped = True
        if self.stream is not None:
            self.stream.cancel()


class Playground:
    """The UI's handle on the engine."""

    def __init__(self, engine: Any, *, api_key: bool = False, root_path: str = "", host: str = ""):
        self.engine = engine
        self.api_key = api_key
        self.root_path = root_path
        self.host = host
        self._running: dict[tuple[str, str], Running] = {}  # (session, tab) -> its stream

    async def _submit(self, request: GenerationRequest, temperature: float, top_p: float,
                      top_k: int, max_tokens: int, tab: str) -> tuple[Any, str | None]:
        """Submit with the sliders' sampling; (stream, None), or (None, a readable error)."""
        request.sampling = sampling_params(temperature, top_p, top_k, max_tokens)
        request.source = "ui"
        try:
            return await self.engine.asubmit(request), None
        except Exception as exc:
            _log_unexpected(exc)
            return None, error_text(exc, tab)

    @contextmanager
    def _tracked(self, session: str, tab: str) -> Iterator[Running]:
        """Register a reply for `stop()` from before its submission to its end, then cancel its
        request (a no-op once it has finished)."""
        running = self._running[(session, tab)] = Running()
        try:
            yield running
        finally:
            if running.stream is not None:
                running.stream.cancel()
            if self._running.get((session, tab)) is running:
                del self._running[(session, tab)]

    def is_running(self, session: str, tab: str = "chat") -> bool:
        return (session, tab) in self._running

    def stop(self, session: str, tab: str = "chat") -> bool:
        """Stop the reply that `session` is receiving in `tab`; False when there is none."""
        running = self._running.get((session, tab))
        if running is None:
            return False
        running.stop()
        return True

    @property
    def supports_thinking(self) -> bool:
        """Whether the model's chat template reads `enable_thinking` (Qwen3's thinking switch)."""
        if getattr(self.engine, "state", None) != "ready":
            return False
        template = getattr(self.engine.tokenizer, "chat_template", None)
        return isinstance(template, str) and "enable_thinking" in template

    # -- chat -------------------------------------------------------------------------------------

    async def chat(
        self,
        history: list[Message],
        system_prompt: str,
        temperature: float,
        top_p: float,
        top_k: int,
        max_tokens: int,
        *,
        thinking: bool | None = None,
        session: str = "",
    ) -> AsyncIterator[list[Message]]:
        """Answer the history's last user message, yielding the whole history as the reply grows.

        `thinking` goes to the chat template as `enable_thinking` (None: the template's default);
        `session` names the page, for `stop()`."""
        history = list(history or [])
        messages = to_engine_messages(history, system_prompt or "")
        if not messages or messages[-1]["role"] != "user":
            yield history
            return
        kwargs = {} if thinking is None else {"enable_thinking": bool(thinking)}
        request = GenerationRequest(messages=messages, chat_template_kwargs=kwargs)
        with self._tracked(session, "chat") as running:
            stream, failure = await self._submit(request, temperature, top_p, top_k, max_tokens,
                                                 "chat")
            if stream is None:
                reply = Reply()
                reply.fail(failure or "")
                yield history + reply.messages()
                return
            running.attach(stream)
            prompt = stream.prompt_text or ""
            reply = Reply(prompt, opens_reasoning=prompt_opens_reasoning(prompt))
            try:
                async for group in paced(stream, lambda: update_interval(reply.chars), _ends):
                    for chunk in group:
                        reply.feed(chunk)
                        if chunk.finish_reason == "cancelled" and not running.stopped:
                            reply.error = "The server is shutting down: the reply was cut short."
                    yield history + reply.messages()
            except Exception as exc:  # shown in the chat; the server keeps serving
                logger.exception("chat generation failed")
                reply.fail(error_text(exc))
                yield history + reply.messages()

    # -- completion -------------------------------------------------------------------------------

    async def complete(
        self, prompt: str, temperature: float, top_p: float, top_k: int, max_tokens: int,
        *, session: str = "",
    ) -> AsyncIterator[tuple[str, str]]:
        """Continue a raw prompt (no chat template), yielding (text so far, statistics line)."""
        if not (prompt or "").strip():
            yield "", "Enter a prompt first."
            return
        with self._tracked(session, "completion") as running:
            stream, failure = await self._submit(
                GenerationRequest(prompt=prompt), temperature, top_p, top_k, max_tokens,
                "completion")
            if stream is None:
                yield "", f"⚠️ {failure}"
                return
            running.attach(stream)
            text = ""
            try:
                # The lambda reads `text` as it grows, on purpose: its length paces the updates.
                async for group in paced(stream, lambda: update_interval(len(text)),  # noqa: B023
                                         _ends):
                    text += "".join(chunk.text for chunk in group)
                    chunk = group[-1]
                    if chunk.finish_reason is None:
                        yield text, "Generating…"
                        continue
                    summary, details = format_stats(chunk.usage, chunk.timings,
                                                    chunk.finish_reason)
                    if chunk.finish_reason == "error":
                        summary = f"⚠️ Generation failed: {chunk.error or 'unknown error'}"
                    yield text, f"{summary}  \n{details}" if details else summary
            except Exception as exc:
                logger.exception("completion failed")
                yield text, f"⚠️ {error_text(exc, 'completion')}"

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
            thinking=self.supports_thinking,
        )

    def banner(self) -> str:
        """The warning across the top, as HTML: one line, the reason and advice on demand."""
        engine = self.engine
        if getattr(engine, "state", None) == "error":
            summary = "⛔ The model could not be loaded."
            details = engine.error or ""
        elif getattr(engine, "is_fallback", False):
            summary = "⚠️ Built-in model: replies are noise"
            reason = getattr(engine, "fallback_reason", None) or "The model could not be loaded."
            details = (
                f"Running the built-in test model instead of the requested one. {reason} The "
                "built-in model has random weights: its replies are noise. Start the server with "
                "a model that is cached or in a local folder to get real answers."
            )
        else:
            return ""
        return (f"<details><summary><strong>{html.escape(summary)}</strong></summary>"
                f"<p>{html.escape(details)}</p></details>")

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
