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
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import torch

from .block_manager import BlockManager
from .errors import EngineOverloadedError
from .runner import ModelRunner
from .sequence import Sequence

logger = logging.getLogger(__name__)


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

    @property
    def mean_tokens_per_second(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0


class Scheduler:
    def __init__(self, runner: ModelRunner, blocks: BlockManager, max_active: int,
                 max_queued: int):
        self.runner = runner
        self.blocks = blocks
        self.max_active = max_active
        self.max_queued = max_queued
        self.budget = runner.max_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # oldest first
        self.counters = Counters()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="nf4serve-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout)

    @property
    def queue_depth(self) -> int:
        return len(self.waiting)

    @property
    def active_count(self) -> int:
        return sum(1 for s in list(self.running) if not s.finished)

    def add(self, seq: Sequence) -> None:
        with self._wake:
            # A finished request may sit in `running` until the worker's next pass: not counted.
            free_slots = max(0, self.max_active - self.active_count)
            if len(self.waiting) >= self.max_queued + free_slots:
                raise EngineOverloadedError(len(self.waiting), self.max_queued)
            self.waiting.append(seq)
            self.counters.requests += 1
            self._wake.notify_all()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # -- worker thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._stopping and not self.waiting and not self.running:
                        self._wake.wait()
                    if self._stopping:
                        break
                    scheduled = self.schedule()
                if scheduled:
                    self._run(scheduled)
        with self._wake:
            for seq in list(self.waiting) + self.running:
                if not seq.finished:
                    seq.abort("cancelled", "the server is shutting down")
                self.blocks.release(seq)
            self.waiting.clear()
            self.running.clear()

    def _run(self, scheduled: list[tuple[Sequence, int]]) -> None:
        try:
            sampled_seqs, sampled = self.runner.execute(scheduled)
        except Exception as exc:  # the step failed: its requests end, the server goes on
            logger.exception("model step failed")
            if isinstance(exc, torch.OutOfMemoryError):
                self.runner.release_memory()
            for seq, _ in scheduled:
                self._end(seq, "error", f"{type(exc).__name__}: {exc}")
            return
        for seq, n in scheduled:
            seq.num_computed += n
            self.blocks.commit(seq)
        for row, seq in enumerate(sampled_seqs):
            error = sampled.errors.get(row)
            if error is None:
                token = sampled.token_ids[row]
                seq.append(token, sampled.logprobs.get(row))
                if seq.matcher is not None and not seq.finished:
                    try:
                        seq.matcher.consume([token])
                    except Exception as exc:
                        error = str(exc)
            if error is not None and not seq.finished:
                logger.error("generation failed for request %s: %s", seq.request_id, error)
                seq.abort("error", error)
            if seq.finished:
                self._end(seq)

    # -- deciding a step ----------------------------------------------------------------------
    def schedule(self) -> list[tuple[Sequence, int]]:
        """The batch of this step: (sequence, tokens to compute). Called with the lock held."""
        budget, scheduled, preempted = self.budget, [], False
        for seq in [s for s in self.waiting if s.cancelled]:
            self.waiting.remove(seq)
            self._end(seq, "cancelled")
        for seq in list(self.running):
            if seq not in self.running:
                continue  # preempted for an older sequence in this pass
            if seq.cancelled:
                self._end(seq, "cancelled")
                continue
            if budget == 0:
                break
            n = min(len(seq.token_ids) - seq.num_computed, budget)
            need = self.blocks.blocks_needed(seq, n)
            while not self.blocks.can_allocate(need) and self.running[-1] is not seq:
                self._preempt(self.running[-1])
                preempted = True
            if not self.blocks.can_allocate(need):
                if len(self.running) == 1:
                    self._end(seq, "error", "the request does not fit in the KV cache "
                              f"({self.blocks.num_blocks * self.blocks.block_size} tokens)")
                else:
                    self._preempt(seq)
                    preempted = True
                continue
            self.blocks.allocate(seq, n)
            scheduled.append((seq, n))
            budget -= n
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
        return scheduled

    def _preempt(self, seq: Sequence) -> None:
        """Free a running sequence's blocks; it waits at the front and is recomputed later."""
        self.running.remove(seq)
        self.blocks.release(seq)
        self.counters.preemptions += 1
        self.waiting.appendleft(seq)
        logger.debug("preempted %s (%d tokens to recompute)", seq.request_id, len(seq.token_ids))

    def _end(self, seq: Sequence, reason: str | None = None, error: str | None = None) -> None:
        """Take a sequence out (finished, or ended now with `reason`), free its blocks, count it."""
        with self._wake:
            if reason is not None and not seq.finished:
                seq.abort(reason, error)
            if seq in self.running:
                self.running.remove(seq)
            self.blocks.release(seq)
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
