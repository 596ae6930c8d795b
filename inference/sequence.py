"""One request's bookkeeping while it is queued or decoding: token ids, its blocks of the paged KV
cache, its sampling state, text state, timings, and the callback through which its chunks reach the
async consumer.

The scheduler thread is the only writer of a `Sequence`, except `cancel()`, which any thread may
call: it only sets a flag that the scheduler reads before each step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from .detokenizer import IncrementalDetokenizer, StopStringMatcher
from .types import (
    FinishReason,
    GenerationChunk,
    SamplingParams,
    Timings,
    TokenLogprob,
    Usage,
)


class Sequence:
    def __init__(
        self,
        request_id: str,
        prompt_ids: list[int],
        params: SamplingParams,
        stop_token_ids: set[int],
        detokenizer: IncrementalDetokenizer,
        emit: Callable[[GenerationChunk], None],
        source: str = "api",
        matcher: Any = None,
    ):
        self.request_id = request_id
        self.prompt_ids = prompt_ids
        self.params = params
        self.max_tokens = int(params.max_tokens or 1)
        self.stop_token_ids = stop_token_ids | set(params.stop_token_ids)
        self.detokenizer = detokenizer
        self.stop_matcher = StopStringMatcher(params.stop)
        self.emit = emit
        self.source = source
        self.matcher = matcher  # the grammar's state (structured.GrammarMatcher), if constrained
        self.output_ids: list[int] = []  # generated tokens fed back to the model
        self.generated = 0  # tokens sampled, a stop token included (what usage reports)
        self._held_ids: list[int] = []  # tokens whose text is not out yet (split characters)
        self._held_logprobs: list[TokenLogprob] = []
        self.token_ids: list[int] = list(prompt_ids)  # prompt + output: what the cache must hold
        # Leading tokens whose keys and values are in the cache or queued to be. Under async
        # scheduling one more than token_ids holds, while that token's id is still on the device.
        self.num_computed = 0
        self.in_flight = 0  # tokens sampled on the device whose ids are not read back yet
        self.block_table: list[int] = []  # the cache blocks holding token_ids, in order
        self.block_hashes: list[int] = []  # content hashes of the full blocks, in order
        # Sampling state, made by the sampler on first use.
        self.sampling_ready = False
        self.noise_seed = 0  # keys the sampling noise: the request's seed, or a random one
        self.counts: torch.Tensor | None = None  # per-id output counts (penalties only)
        self.seen: torch.Tensor | None = None  # ids in the prompt or output (penalties only)
        self.finish_reason: FinishReason | None = None
        self.submitted = time.perf_counter()
        self.admitted: float | None = None
        self.first_token: float | None = None
        self.finished_at: float | None = None
        self._cancel = threading.Event()

    # -- any thread -------------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    # -- scheduler thread -------------------------------------------------------------------
    def append(self, token_id: int, logprob: TokenLogprob | None) -> None:
        """Record a sampled token and emit the text it completes; finish on stop or length."""
        now = time.perf_counter()
        if self.first_token is None:
            self.first_token = now
        self.generated += 1
        self._held_ids.append(token_id)
        if token_id in self.stop_token_ids:
            self._finish("stop")  # the stop token is counted but has no text and no logprob
            return
        if logprob is not None:
            self._held_logprobs.append(logprob)
        self.output_ids.append(token_id)
        self.token_ids.append(token_id)
        text, hit = self.stop_matcher.feed(self.detokenizer.add(token_id))
        if hit:
            self._finish("stop", text)
        elif len(self.output_ids) >= self.max_tokens:
            self._finish("length", text)
        elif text:
            self.emit(GenerationChunk(self.request_id, text, *self._take_held()))

    def _take_held(self) -> tuple[list[int], list[TokenLogprob] | None]:
        ids, logprobs = self._held_ids, self._held_logprobs or None
        self._held_ids, self._held_logprobs = [], []
        return ids, logprobs

    def abort(self, reason: FinishReason, error: str | None = None) -> None:
        """End early (cancelled or failed): emit the final chunk, no more text."""
        self._finish(reason, "", error=error, flush=False)

    def _finish(self, reason: FinishReason, text: str = "", error: str | None = None,
                flush: bool = True) -> None:
        if flush and not self.stop_matcher.stopped:
            tail, hit = self.stop_matcher.feed(self.detokenizer.flush())
            text += tail if hit else tail + self.stop_matcher.flush()
            if hit:
                reason = "stop"
        self.finish_reason = reason
        self.finished_at = time.perf_counter()
        self.emit(GenerationChunk(
            self.request_id, text, *self._take_held(), reason,
            usage=Usage(len(self.prompt_ids), self.generated), timings=self.timings(),
            error=error,
        ))

    def timings(self) -> Timings:
        end = self.finished_at or time.perf_counter()
        admitted = self.admitted or end
        first = self.first_token or end
        decoded = max(len(self.output_ids) - 1, 0)
        decode_time = end - first
        return Timings(
            queue=admitted - self.submitted,
            time_to_first_token=first - self.submitted,
            total=end - self.submitted,
            tokens_per_second=decoded / decode_time if decoded and decode_time > 0 else 0.0,
        )
