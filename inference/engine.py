"""The engine: one object that owns the model and serves generation requests as async streams.

`submit()` validates and tokenizes a request on the caller's thread (so context and overload errors
come back before any streaming starts) and hands it to the scheduler's worker thread; the returned
`RequestStream` (request_stream.py) yields `GenerationChunk`s as the worker produces them.
`generate()` is that stream collected. The API and the UI consume exactly this; neither touches the
model. What it reports about itself (model info, KV cache, health) is built in info.py.

Shutdown is bounded: `drain(timeout)` refuses new requests at once (`EngineStoppingError`), lets the
running ones finish for `timeout` seconds, then ends the rest with finish_reason "cancelled";
`shutdown()` stops the worker. States: loading, ready, error, stopping, stopped.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from . import info as info_mod
from . import structured
from .block_manager import BlockManager
from .builtin import WARNING as BUILTIN_WARNING
from .chat import render_chat, trim_to_fit
from .config import BUILTIN_MODEL, EngineSettings, fallback_allowed
from .detokenizer import IncrementalDetokenizer
from .errors import (
    ContextLengthError,
    EngineStoppingError,
    InvalidRequestError,
    ModelLoadError,
    ModelNotLoadedError,
    ModelUnavailableError,
)
from .loader import LoadedModel, load_model
from .outbox import Outbox
from .prompt_bounds import encode_prompt
from .request_stream import RequestStream
from .runner import ModelRunner
from .scheduler import Scheduler
from .sequence import Sequence
from .token_cache import PrefixTokenCache
from .types import (
    FinishedRequest,
    GenerationChunk,
    GenerationRequest,
    GenerationResult,
    SamplingDefaults,
    SamplingParams,
)

logger = logging.getLogger(__name__)
TOKENIZE_WINDOWS = 4  # /tokenize counts up to this many context windows

DRAIN_POLL_S = 0.05


@dataclass
class Prepared:
    """A request ready for the scheduler: resolved parameters and its prompt's tokens."""

    request: GenerationRequest
    params: SamplingParams
    prompt_ids: list[int]
    prompt_text: str | None
    matcher: Any = None


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: loading creates hundreds of thousands of objects that
    all live on, and the full collections they would trigger take about a second of a CPU start."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Engine:
    def __init__(self, settings: EngineSettings | None = None):
        self.settings = settings or EngineSettings()
        self.state = "loading"
        self.error: str | None = None
        self.loaded: LoadedModel | None = None
        self.is_fallback = False
        self.fallback_reason: str | None = None
        self.started_at = time.time()
        self._scheduler: Scheduler | None = None
        self._stopping = False  # drain() or shutdown() began: no request is admitted any more
        self._listeners: list[Callable[[FinishedRequest], None]] = []
        self._outbox = Outbox()  # chunks from the scheduler's thread to the consumers' loops
        self._token_cache: PrefixTokenCache | None = None  # chat prompts' leading turns, tokenized

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the model on a worker thread. Never raises: failures set `state` to "error"."""
        with gc_paused():
            try:
                self.loaded = await asyncio.to_thread(self._load)
            except Exception as exc:
                self.state, self.error = "error", str(exc)
                logger.error("Model loading failed: %s", exc)
                return
            try:
                runner = await asyncio.to_thread(ModelRunner, self.loaded, self.settings,
                                                 self._window_limit)
            except Exception as exc:
                self.state, self.error = "error", f"Allocating the KV cache failed: {exc}"
                logger.error(self.error)
                return
        self._token_cache = PrefixTokenCache(self.loaded.tokenizer)
        blocks = BlockManager(runner.num_blocks, runner.block_size, self.settings.prefix_caching)
        self._scheduler = Scheduler(runner, blocks, self.settings.max_active_requests,
                                    self.settings.max_queued_requests, self._outbox)
        self._scheduler.start()
        if self._stopping:  # the server began shutting down while the model loaded
            self._scheduler.close()
            return
        self.state = "ready"
        if self.is_builtin:
            logger.warning("Serving the %s", BUILTIN_WARNING)
        logger.info("Engine ready: %s, context window %d", self.model_name, self.max_context)

    def _load(self) -> LoadedModel:
        try:
            return load_model(self.settings)
        except ModelUnavailableError as exc:
            if not fallback_allowed(self.settings):
                raise
            logger.warning("!" * 78)
            logger.warning("FALLBACK: %s", exc)
            logger.warning("Starting the built-in model instead: %s.", BUILTIN_WARNING)
            logger.warning("!" * 78)
            self.is_fallback, self.fallback_reason = True, str(exc)
            return load_model(self.settings.model_copy(update={"model": BUILTIN_MODEL}))

    async def drain(self, timeout: float) -> None:
        """Stop admitting requests (each new one gets `EngineStoppingError` at once) and give those
        queued or running up to `timeout` seconds to finish; then end the rest with finish_reason
        "cancelled", which the API sends as a `server_shutting_down` error. Cancelling the drain
        (a second signal) ends the wait at once, the same way."""
        self._stopping = True
        if self.state in ("loading", "ready"):
            self.state = "stopping"
        scheduler = self._scheduler
        if scheduler is None:
            return
        scheduler.close()
        deadline = time.monotonic() + timeout
        try:
            while not scheduler.idle and time.monotonic() < deadline:
                await asyncio.sleep(DRAIN_POLL_S)
        finally:
            if not scheduler.idle:
                logger.warning("Shutting down: ending %d request(s) that are still running or "
                               "queued.", scheduler.active_count + scheduler.queue_depth)
                scheduler.abort_all()

    async def shutdown(self) -> None:
        """Stop the worker; a request still queued or running ends with finish_reason "cancelled"."""
        self._stopping = True
        if self.state in ("loading", "ready"):
            self.state = "stopping"
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.stop)
            self._scheduler = None
        self.loaded = None
        self.state = "stopped"

    # -- facts --------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.loaded.name if self.loaded else (
            BUILTIN_MODEL if self.is_fallback else self.settings.model)

    @property
    def is_builtin(self) -> bool:
        return bool(self.loaded and self.loaded.builtin)

    @property
    def tokenizer(self):
        return self._require().tokenizer

    @property
    def defaults(self) -> SamplingDefaults:
        return self.loaded.defaults if self.loaded else SamplingDefaults()

    @property
    def _window_limit(self) -> int:
        window = self.loaded.window if self.loaded else 262144
        configured = self.settings.max_context
        return min(window, configured) if configured else window

    @property
    def max_context(self) -> int:
        """Largest prompt plus output: the window, the setting and the KV cache's capacity."""
        if self._scheduler is None:
            return self._window_limit
        return min(self._window_limit, self._scheduler.runner.capacity_tokens)

    @property
    def queue_depth(self) -> int:
        return self._scheduler.queue_depth if self._scheduler else 0

    @property
    def active_count(self) -> int:
        return self._scheduler.active_count if self._scheduler else 0

    def _admitting(self) -> None:
        """Raise `EngineStoppingError` once the server is shutting down: new requests only."""
        if self._stopping:
            raise EngineStoppingError()

    def _require(self) -> LoadedModel:
        """The loaded model, also while draining (running streams still detokenize)."""
        if self.loaded is not None and self.state in ("ready", "stopping"):
            return self.loaded
        self._admitting()
        if self.state != "ready" or self.loaded is None:
            if self.state == "error":
                raise ModelNotLoadedError(f"The model failed to load: {self.error}", "error")
            raise ModelNotLoadedError("The model is still loading; retry shortly.", self.state)
        return self.loaded

    # -- requests -----------------------------------------------------------------------------
    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                    chat_template_kwargs: dict[str, Any] | None = None,
                    assistant_prefix: str = "") -> str:
        return render_chat(self.tokenizer, messages, tools, chat_template_kwargs, assistant_prefix,
                           self.settings.trust_request_chat_template)

    def _prompt(self, request: GenerationRequest) -> tuple[list[int], str | None]:
        """The prompt's token ids, and its text when it was rendered from chat messages."""
        given = [x is not None for x in (request.prompt, request.prompt_token_ids, request.messages)]
        if sum(given) != 1:
            raise InvalidRequestError("give exactly one of prompt, prompt_token_ids or messages")
        tokenizer = self.tokenizer
        if request.prompt_token_ids is not None:
            ids = list(request.prompt_token_ids)
            vocabulary = len(tokenizer)  # once, not per id: about 1 µs a call
            if any(not isinstance(i, int) or not 0 <= i < vocabulary for i in ids):
                raise InvalidRequestError("prompt_token_ids holds an unknown token id", "prompt")
            return ids, None
        # Tokenized only as far as the window: a prompt that cannot fit is refused part-way.
        if request.prompt is not None:
            return encode_prompt(tokenizer, request.prompt, self.max_context), request.prompt
        kwargs = dict(tools=request.tools, chat_template_kwargs=request.chat_template_kwargs,
                      assistant_prefix=request.assistant_prefix,
                      trust_template=self.settings.trust_request_chat_template)
        if self.settings.trim_chat_history:
            request.messages, ids, text = trim_to_fit(tokenizer, request.messages,
                                                      self.max_context, **kwargs)
            return ids, text
        text = render_chat(tokenizer, request.messages, **kwargs)
        return self._token_cache.encode(text, self.max_context, "messages"), text

    def tokenize(self, request: GenerationRequest) -> list[int]:
        """The token ids of `request`'s `prompt`, or of its `messages` rendered as `submit` renders
        them (template, tools, kwargs), with no history trimming: for clients counting tokens.
        Counts past the context window, up to TOKENIZE_WINDOWS windows (a bound, so one huge body
        cannot hold a worker thread for long). Thread-safe."""
        param = "messages" if request.messages is not None else "prompt"
        if request.messages is not None:
            text = self.render_chat(request.messages, request.tools, request.chat_template_kwargs,
                                    request.assistant_prefix)
        elif request.prompt is None:
            raise InvalidRequestError("give a prompt or messages to tokenize", "prompt")
        else:
            text = request.prompt
        limit = TOKENIZE_WINDOWS * self.max_context
        try:
            return encode_prompt(self.tokenizer, text, limit, param)
        except ContextLengthError as exc:
            raise InvalidRequestError(
                f"The {param} has {'at least ' if exc.at_least else ''}{exc.prompt_tokens} tokens; "
                f"tokenize counts up to {limit - 1} ({TOKENIZE_WINDOWS} times the context window "
                f"of {self.max_context}).", param) from None

    def _prepare(self, request: GenerationRequest) -> Prepared:
        """Everything before enqueueing: defaults, template, tokens, the context check. Thread-safe."""
        loaded = self._require()
        params = request.sampling.resolved(loaded.defaults)
        if params.max_tokens is not None and params.max_tokens < 1:
            raise InvalidRequestError("max_tokens must be at least 1", "max_tokens")
        # More than the whole window is an error (as in vLLM); within it, it is clipped below.
        asked = request.sampling.max_tokens
        if asked is not None and asked > self.max_context:
            raise InvalidRequestError(
                f"max_tokens is {asked}, more than this model's context window of "
                f"{self.max_context} tokens (prompt and output together).", "max_tokens")
        vocabulary = len(loaded.tokenizer)
        unknown = [token for token in params.logit_bias or {} if not 0 <= token < vocabulary]
        if unknown:
            raise InvalidRequestError(f"logit_bias holds token id {unknown[0]}, which is not in the "
                                      f"vocabulary (0-{vocabulary - 1})", "logit_bias")
        prompt_ids, prompt_text = self._prompt(request)
        if not prompt_ids:
            raise InvalidRequestError("the prompt is empty", "prompt")
        room = self.max_context - len(prompt_ids)
        if room < 1:
            raise ContextLengthError(len(prompt_ids), self.max_context, params.max_tokens)
        params.max_tokens = min(params.max_tokens or room, room)
        matcher = None
        if params.grammar is not None:
            matcher = structured.new_matcher(loaded.tokenizer, params.grammar)
        return Prepared(request, params, prompt_ids, prompt_text, matcher)

    def _enqueue(self, prepared: Prepared) -> RequestStream:
        self._admitting()
        loaded = self._require()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GenerationChunk] = asyncio.Queue()

        context = contextvars.copy_context()  # the submitter's: listeners run in it

        def emit(chunk: GenerationChunk) -> None:
            # If the consumer's event loop has closed by the hand-over, nobody is listening.
            if chunk.finish_reason is not None and self._listeners:
                record = FinishedRequest.from_chunk(chunk, seq.source, len(seq.prompt_ids))
                # Queued before the last chunk: listeners have run when the consumer sees it.
                self._outbox.put(loop, self._notify, record, seq.cancel, context)
            self._outbox.put(loop, queue.put_nowait, chunk, seq.cancel)

        request = prepared.request
        seq = Sequence(request.request_id, prepared.prompt_ids, prepared.params,
                       set(loaded.stop_token_ids), IncrementalDetokenizer(loaded.tokenizer), emit,
                       request.source, prepared.matcher)
        assert self._scheduler is not None
        self._scheduler.add(seq)
        return RequestStream(seq, queue, self._wake, prepared.prompt_text)

    def _wake(self) -> None:
        if self._scheduler is not None:  # None once the engine has shut down: nothing to wake
            self._scheduler.wake()

    def submit(self, request: GenerationRequest) -> RequestStream:
        """Validate, tokenize and enqueue; raises typed errors before any chunk is produced."""
        self._admitting()
        return self._enqueue(self._prepare(request))

    async def asubmit(self, request: GenerationRequest) -> RequestStream:
        """`submit`, with the template and tokenizer run on a worker thread, so that a huge prompt
        does not hold up the event loop (and every other stream on it)."""
        self._admitting()
        return self._enqueue(await asyncio.to_thread(self._prepare, request))

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return await (await self.asubmit(request)).collect()

    # -- reporting ----------------------------------------------------------------------------
    def add_listener(self, listener: Callable[[FinishedRequest], None]) -> Callable[[], None]:
        """Call `listener(FinishedRequest)` whenever a request ends, however it ends; returns a
        function that removes it. It runs on the submitter's event loop, in the submitter's
        contextvars context, before the request's last chunk reaches its consumer; it must be quick
        and must not block. Adding the same listener twice registers it once."""
        if listener not in self._listeners:
            self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def _notify(self, record: FinishedRequest) -> None:
        for listener in list(self._listeners):
            try:
                listener(record)
            except Exception:  # a broken listener must not break the request or the others
                logger.exception("A request listener failed")

    def info(self) -> dict[str, Any]:
        return info_mod.model_info(self)

    def kv_cache(self) -> dict[str, Any] | None:
        """The paged KV cache: capacity, blocks in use, preemptions and the prefix-cache hit rate."""
        return info_mod.kv_cache(self._scheduler)

    def health(self) -> dict[str, Any]:
        return info_mod.health(self)


__all__ = ["Engine", "RequestStream", "ModelLoadError"]
