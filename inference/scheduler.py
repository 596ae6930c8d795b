"""The scheduler: continuous batching on one worker thread, from submission to a request's last chunk.

Every iteration is one forward pass over a batch chosen under a token budget
(`max_num_batched_tokens`): first each running sequence gets the tokens it still needs to compute
(one for a decode, a chunk of its prompt for a prefill), oldest first, then waiting requests are
admitted (their cached prefix blocks taken from the prefix cache) while budget, KV blocks and
`max_active_requests` allow. A 32K-token prompt thus prefills a chunk per step beside the streams
already decoding instead of freezing them. When the KV pool runs out, the newest running sequences
are preempted: their blocks are freed and they wait at the front of the queue to be recomputed.

Cancellation is a flag read at each iteration: a cancelled request leaves within one step and its
blocks are freed. A failure in one request's sampling ends that request alone; a failed forward pass
ends the requests of that step and the server keeps serving.

A full queue is refused with a `Retry-After` estimate: the queue's depth over the rate at which
requests have recently finished. At shutdown the scheduler is first closed (new requests refused,
running ones go on), then whatever is left is aborted between two steps.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass

import torch

from .block_manager import BlockManager
from .errors import EngineOverloadedError, EngineStoppingError
from .outbox import Outbox
from .runner import ModelRunner
from .sampling import PendingSample
from .sequence import Sequence

logger = logging.getLogger(__name__)
SLOW_STEP_S = 0.2  # on a GPU, a step this long is logged with what it held (at most once a second)

RATE_WINDOW_S = 60.0  # how far back finished requests count towards the completion rate
MIN_RETRY_AFTER_S, MAX_RETRY_AFTER_S = 1, 60
SHUTDOWN_REASON = "the server is shutting down"


class CompletionRate:
    """Requests finished per second over the last `window` seconds (or since `start`, if later):
    how fast the queue moves. Times are `time.monotonic()` seconds; not thread-safe."""

    def __init__(self, window: float = RATE_WINDOW_S, start: float | None = None):
        self.window = window
        self.start = time.monotonic() if start is None else start
        self._times: deque[float] = deque()

    def record(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def per_second(self, now: float) -> float:
        self._trim(now)
        span = min(self.window, now - self.start)
        return len(self._times) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()


def retry_after(queue_depth: int, rate: float) -> int:
    """Seconds a refused client should wait: the time the queue ahead of it takes to drain at the
    recent completion rate, clamped to [1, 60]; 60 when nothing finished lately."""
    if rate <= 0:
        return MAX_RETRY_AFTER_S
    return min(MAX_RETRY_AFTER_S, max(MIN_RETRY_AFTER_S, math.ceil(queue_depth / rate)))


@dataclass
class LaunchedStep:
    """A step queued on the device whose sampled ids are not read back yet."""

    scheduled: list[tuple[Sequence, int]]
    to_sample: list[Sequence]
    pending: PendingSample | None
    started: float  # perf_counter() at launch


@dataclass
class Counters:
    requests: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    preemptions: int = 0
    tokens_generated: int = 0
    decode_seconds: float = 0.0  # summed over finished requests, for the mean tokens/s
    decode_tokens: int = 0
    steps: int = 0  # forward passes launched
    steps_ahead: int = 0  # of which launched before the previous one's tokens were read back

    @property
    def mean_tokens_per_second(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0


class Scheduler:
    def __init__(self, runner: ModelRunner, blocks: BlockManager, max_active: int,
                 max_queued: int, outbox: Outbox | None = None):
        self.runner = runner
        self.outbox = outbox or Outbox()  # the sequences' chunks, handed over once per iteration
        self.blocks = blocks
        self.max_active = max_active
        self.max_queued = max_queued
        self.budget = runner.max_batched_tokens
        # Beside running streams, a prompt chunk's attention (chunk × context) stays under what a
        # full chunk at 4 × its length of context costs: at 2,048 tokens a step, 2,048 tokens of a
        # prompt at 8K context, 512 at 32K, 64 at 256K, so the streams' next token is not held up.
        self.chunk_cost = 4 * self.budget * self.budget
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # oldest first
        self.counters = Counters()
        self.finished_rate = CompletionRate()
        self._wake = threading.Condition()
        self._stopping = False
        self._closed = False  # no new requests: the server is shutting down
        self._abort_reason: str | None = None  # set: end every request at the next pass
        self._thread = threading.Thread(target=self._loop, name="nf4serve-scheduler", daemon=True)
        # CPU steps of a real model are routinely slow: only GPU steps are worth a log line.
        self.slow_step_s: float | None = SLOW_STEP_S if runner.device.type == "cuda" else None
        self._slow_logged_at = -math.inf
        # Steps since the last one that read results back: on a GPU a step that samples nothing
        # does not wait for the device, so the next one that does waits for them too.
        self._queued_steps = 0
        self.async_steps = runner.async_scheduling

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stopping = self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout)

    def close(self) -> None:
        """Refuse new requests from now on (`EngineStoppingError`); queued and running ones go on."""
        with self._wake:
            self._closed = True

    def abort_all(self, reason: str = SHUTDOWN_REASON) -> None:
        """End every queued and running request as "cancelled" with `reason`. The worker does it
        between two steps, so no token is emitted after a request's final chunk."""
        with self._wake:
            self._abort_reason = reason
            self._wake.notify_all()

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing running: every admitted request has ended (its final chunk
        may still wait in the outbox for the worker's next hand-over, which comes next)."""
        return not self.waiting and self.active_count == 0

    @property
    def queue_depth(self) -> int:
        return len(self.waiting)

    @property
    def active_count(self) -> int:
        return sum(1 for s in list(self.running) if not s.finished)

    def retry_after_s(self) -> int:
        """Seconds until the current queue has likely moved on (`retry_after()`)."""
        with self._wake:
            return retry_after(len(self.waiting), self.finished_rate.per_second(time.monotonic()))

    def add(self, seq: Sequence) -> None:
        with self._wake:
            if self._closed:
                raise EngineStoppingError()
            # A finished request may sit in `running` until the worker's next pass: not counted.
            free_slots = max(0, self.max_active - self.active_count)
            if len(self.waiting) >= self.max_queued + free_slots:
                raise EngineOverloadedError(len(self.waiting), self.max_queued, self.retry_after_s())
            self.waiting.append(seq)
            self.counters.requests += 1
            self._wake.notify_all()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # -- worker thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            with torch.inference_mode():
                while self._iterate():
                    pass
            with self._wake:
                for seq in list(self.waiting) + self.running:
                    if not seq.finished:
                        seq.abort("cancelled", SHUTDOWN_REASON)
                    self.blocks.release(seq)
                self.waiting.clear()
                self.running.clear()
        finally:
            self.outbox.flush()

    def _iterate(self) -> bool:
        """One pass: wait for work, decide a step and run it; False once stopping.

        On a GPU, the chunks a step produces are handed over (`outbox.flush`) while the device
        computes the next step, once its forward pass is queued: the event loops then format and
        send them while this thread waits for the device, instead of holding the GIL while it
        queues that work (so a cancelled stream may get one token more than on a CPU, where they
        are handed over before the next step). With no step to follow, they are handed over
        before this thread waits for work.

        With async scheduling, while only decodes run and nothing waits, each step is followed by
        the next one before its tokens are read back (`_follow_up`): the device computes step N+1
        while this thread turns step N's tokens into text."""
        with self._wake:
            while (not self._stopping and not self.waiting and not self.running
                   and self._abort_reason is None):
                self.outbox.flush()
                self._wake.wait()
            if self._stopping:
                return False
            if self._abort_reason is not None:
                self._abort_now(self._abort_reason)
                self.outbox.flush()
                return True
            scheduled = self.schedule()
        if not scheduled:
            self.outbox.flush()
            return True
        step = self._launch(scheduled)
        while step is not None:
            following = None
            if self.async_steps and step.to_sample:
                with self._wake:
                    batch = self._follow_up(step)
                if batch:
                    following = self._launch(batch, step)
            self._complete(step)
            step = following
        return True

    def _launch(self, scheduled: list[tuple[Sequence, int]], previous: LaunchedStep | None = None,
                ) -> LaunchedStep | None:
        """Queue a step on the device; None if that failed (its requests have ended). With
        `previous` (async scheduling), its sampled ids, still on the device, are this step's
        inputs."""
        start = time.perf_counter()
        try:
            carried = None
            if previous is not None:
                rows = {id(seq): row for row, seq in enumerate(previous.to_sample)}
                carried = self.runner.carry(previous.pending,
                                            [rows[id(seq)] for seq, _ in scheduled])
            to_sample, pending = self.runner.launch(scheduled, carried, self.outbox.flush)
        except Exception as exc:
            self._failed(scheduled, exc)
            return None
        for seq, n in scheduled:
            seq.num_computed += n
            self.blocks.commit(seq)
        for seq in to_sample:
            seq.in_flight += 1
        self.counters.steps += 1
        self.counters.steps_ahead += previous is not None
        return LaunchedStep(scheduled, to_sample, pending, start)

    def _failed(self, scheduled: list[tuple[Sequence, int]], exc: Exception) -> None:
        """A step failed: its requests end, the server goes on."""
        self.outbox.flush()
        logger.error("model step failed", exc_info=exc)
        if isinstance(exc, torch.OutOfMemoryError):
            self.runner.release_memory()
        for seq, _ in scheduled:
            if not seq.finished:
                self._end(seq, "error", f"{type(exc).__name__}: {exc}")

    def _follow_up(self, step: LaunchedStep) -> list[tuple[Sequence, int]] | None:
        """The next step of decodes to launch before `step`'s tokens are read back, or None when
        the next step must be decided on them: something waits to be admitted or aborted, a
        sequence is prefilling or cancelled, a grammar, logits processor, penalty or logprobs
        needs the host's view of the tokens, or the KV pool has no room without preempting. Every
        sequence `step` samples takes part but one that will surely have ended (its last token by
        max_tokens); a sequence that ends on `step`'s token drops the token computed after it.
        Called with the lock held."""
        if self._stopping or self._abort_reason is not None or self.waiting:
            return None
        live = [seq for seq in step.to_sample if not seq.finished]
        if len(live) != len(self.running) or any(seq.cancelled for seq in live):
            return None  # a running sequence is prefilling, or one must end now
        batch = []
        for seq in live:
            p = seq.params
            if (seq.matcher is not None or p.logits_processors or seq.counts is not None
                    or p.logprobs is not None):
                return None
            if len(seq.output_ids) + seq.in_flight < seq.max_tokens:
                batch.append((seq, 1))
        need = sum(self.blocks.blocks_needed(seq, 1) for seq, _ in batch)
        if not batch or not self.blocks.can_allocate(need):
            return None
        for seq, _ in batch:
            self.blocks.allocate(seq, 1)
        return batch

    def _complete(self, step: LaunchedStep) -> None:
        """Read a launched step's sampled ids back and hand each sequence its token."""
        try:
            sampled = self.runner.collect(step.pending)
        except Exception as exc:
            self._failed(step.scheduled, exc)
            return
        self._log_if_slow(step.scheduled, time.perf_counter() - step.started, self._queued_steps)
        self._queued_steps = 0 if step.to_sample else self._queued_steps + 1
        for row, seq in enumerate(step.to_sample):
            seq.in_flight -= 1
            if seq.finished:
                continue  # ended on the step before this one's token (async scheduling)
            error = sampled.errors.get(row)
            if error is None:
                token = sampled.token_ids[row]
                seq.append(token, sampled.logprobs.get(row))
                if seq.matcher is not None and not seq.finished:
                    try:
                        seq.matcher.consume([token])
                    except Exception as exc:
                        error = str(exc)
                self.blocks.commit(seq)  # the token may complete a block
            if error is not None and not seq.finished:
                logger.error("generation failed for request %s: %s", seq.request_id, error)
                seq.abort("error", error)
            if seq.finished:
                self._end(seq)

    def _log_if_slow(self, scheduled: list[tuple[Sequence, int]], seconds: float,
                     queued: int = 0) -> None:
        """One line for a step over `slow_step_s` (a stall in the streams' tokens), saying what it
        held, so that a stall seen by clients can be traced to a step in the server log, and how
        many earlier steps it waited for (`queued`: steps that sampled nothing, so returned before
        the device ran them: the last chunk of a prompt prefilled alone carries the others)."""
        now = time.monotonic()
        if self.slow_step_s is None or seconds < self.slow_step_s or now - self._slow_logged_at < 1:
            return
        self._slow_logged_at = now
        chunks = [(seq, n) for seq, n in scheduled if n > 1]  # the rest: one token each
        logger.info("Slow step: %.0f ms for %d decodes and %d prompt tokens in %d chunks "
                    "(longest context %d tokens)%s", seconds * 1000, len(scheduled) - len(chunks),
                    sum(n for _, n in chunks), len(chunks),
                    max(seq.num_computed + n for seq, n in scheduled),
                    f", waiting for {queued} earlier steps queued on the device" if queued else "")

    # -- deciding a step ----------------------------------------------------------------------
    def schedule(self) -> list[tuple[Sequence, int]]:
        """The batch of this step: (sequence, tokens to compute). Called with the lock held.

        Decodes first (a token each), then newly admitted requests, then the next chunks of prompts
        still prefilling: a long prompt takes the budget that is left, and never holds back a
        running stream or a newcomer; beside running streams its chunks shrink as its context
        grows (`chunk_cost`)."""
        budget, scheduled, preempted = self.budget, [], False
        for seq in [s for s in self.waiting if s.cancelled]:
            self.waiting.remove(seq)
            self._end(seq, "cancelled")
        for seq in [s for s in self.running if s.cancelled]:
            self._end(seq, "cancelled")
        decoding = [s for s in self.running if len(s.token_ids) - s.num_computed == 1]
        prefilling = [s for s in self.running if len(s.token_ids) - s.num_computed > 1]
        for seq in decoding:
            if budget == 0:
                break
            if seq not in self.running:
                continue  # preempted for an older sequence in this pass
            while not self.blocks.can_allocate(self.blocks.blocks_needed(seq, 1)) \
                    and self.running[-1] is not seq:
                self._preempt(self.running[-1])  # the newest: not scheduled yet
                preempted = True
            if self._fits(seq, 1, scheduled):
                scheduled.append((seq, 1))
                budget -= 1
            elif seq in self.running:
                self._preempt(seq)
                preempted = True
        while self.waiting and not preempted and budget > 0 and len(self.running) < self.max_active:
            seq = self.waiting[0]
            if seq.cancelled:
                self.waiting.popleft()
                self._end(seq, "cancelled")
                continue
            hits = self.blocks.match_prefix(seq)
            computed = len(hits) * self.blocks.block_size
            n = min(len(seq.token_ids) - computed, budget)
            need = -(-(computed + n) // self.blocks.block_size) - len(hits)
            held = sum(1 for b in hits if self.blocks.blocks[b].ref_count == 0)
            if need > self.blocks.num_free - held:
                break
            self.waiting.popleft()
            self.blocks.admit(seq, hits)
            self.blocks.allocate(seq, n)
            if seq.admitted is None:
                seq.admitted = time.perf_counter()
            self.running.append(seq)
            scheduled.append((seq, n))
            budget -= n
        for seq in prefilling:
            if budget == 0:
                break
            if seq not in self.running:
                continue
            bs = self.blocks.block_size
            room = (len(seq.block_table) + self.blocks.num_free) * bs - seq.num_computed
            n = min(len(seq.token_ids) - seq.num_computed, budget, room)
            if decoding:  # streams are waiting on this step: keep its attention work bounded
                n = min(n, max(bs, self.chunk_cost // max(seq.num_computed, 1) // bs * bs))
            if self._fits(seq, n, scheduled):
                scheduled.append((seq, n))
                budget -= n
        return scheduled

    def _fits(self, seq: Sequence, n: int, scheduled: list) -> bool:
        """Allocate blocks for `n` more tokens of `seq` if the pool has them. A sequence that
        cannot get one block although nothing else runs can never fit: it ends with an error."""
        need = self.blocks.blocks_needed(seq, n)
        if self.blocks.can_allocate(need) and n > 0:
            self.blocks.allocate(seq, n)
            return True
        if len(self.running) == 1 and not scheduled:
            self._end(seq, "error", "the request does not fit in the KV cache "
                      f"({self.blocks.num_blocks * self.blocks.block_size} tokens)")
        return False

    def _preempt(self, seq: Sequence) -> None:
        """Free a running sequence's blocks; it waits at the front and is recomputed later."""
        self.running.remove(seq)
        self.blocks.release(seq)
        self.counters.preemptions += 1
        self.waiting.appendleft(seq)
        logger.debug("preempted %s (%d tokens to recompute)", seq.request_id, len(seq.token_ids))

    def _abort_now(self, reason: str) -> None:
        """End every queued and running request (`abort_all`). Called with the lock held."""
        for seq in list(self.waiting) + list(self.running):
            self._end(seq, "cancelled", reason)
        self.waiting.clear()
        self._abort_reason = None

    def _end(self, seq: Sequence, reason: str | None = None, error: str | None = None) -> None:
        """Take a sequence out (finished, or ended now with `reason`), free its blocks, count it."""
        with self._wake:
            if reason is not None and not seq.finished:
                seq.abort(reason, error)
            if seq in self.running:
                self.running.remove(seq)
            self.blocks.release(seq)
            self.finished_rate.record(time.monotonic())
        self._account(seq)

    def _account(self, seq: Sequence) -> None:
        c = self.counters
        c.tokens_generated += len(seq.output_ids)
        if seq.finish_reason == "cancelled":
            c.cancelled += 1
        elif seq.finish_reason == "error":
            c.failed += 1
        else:
            c.completed += 1
        if seq.first_token and seq.finished_at and len(seq.output_ids) > 1:
            c.decode_seconds += seq.finished_at - seq.first_token
            c.decode_tokens += len(seq.output_ids) - 1
