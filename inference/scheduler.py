"""The scheduler: owns every request from submission to its last chunk, on one worker thread.

Waiting requests are admitted up to `max_active`; each loop prefills the newly admitted ones, then
gives every active request one decode step in turn (round robin), so concurrent requests, from the
UI or the API, progress together and a long generation cannot starve a short one. Cancellation is a
flag checked before each step: a cancelled request leaves the model within one step and its KV cache
is dropped. A failure in one request's step ends that request alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import torch

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
    tokens_generated: int = 0
    decode_seconds: float = 0.0  # summed over finished requests, for the mean tokens/s
    decode_tokens: int = 0

    @property
    def mean_tokens_per_second(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0


class Scheduler:
    def __init__(self, runner: ModelRunner, max_active: int, max_queued: int):
        self.runner = runner
        self.max_active = max_active
        self.max_queued = max_queued
        self.waiting: deque[Sequence] = deque()
        self.active: list[Sequence] = []
        self._admitting = 0  # taken off `waiting`, being prefilled, not yet in `active`
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
        # A finished request may still sit in `active` until the worker's next pass: not counted.
        return sum(1 for s in self.active if not s.finished) + self._admitting

    def add(self, seq: Sequence) -> None:
        with self._wake:
            free_slots = max(0, self.max_active - self.active_count)
            if len(self.waiting) >= self.max_queued + free_slots:
                raise EngineOverloadedError(len(self.waiting), self.max_queued)
            self.waiting.append(seq)
            self.counters.requests += 1
            self._wake.notify_all()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # -- worker thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._stopping and not self.waiting and not self.active:
                        self._wake.wait()
                    if self._stopping:
                        break
                    admitted = []
                    while self.waiting and len(self.active) + len(admitted) < self.max_active:
                        admitted.append(self.waiting.popleft())
                    self._admitting = len(admitted)
                try:
                    self._iteration(admitted)
                except Exception:  # never let the worker die: that would hang every request
                    logger.exception("scheduler iteration failed")
                    for seq in admitted:
                        if not seq.finished and seq not in self.active:
                            seq.abort("error", "internal scheduler error")
                    with self._wake:
                        self._admitting = 0
                    self.active = [s for s in self.active if not s.finished]
        for seq in list(self.waiting) + self.active:
            if not seq.finished:
                seq.abort("cancelled", "the server is shutting down")

    def _iteration(self, admitted: list[Sequence]) -> None:
        for seq in admitted:
            seq.admitted = time.perf_counter()
            self._step(seq, prefill=True)
            if not seq.finished:
                self.active.append(seq)
            with self._wake:
                self._admitting -= 1
        for seq in list(self.active):
            self._step(seq, prefill=False)
        self.active = [s for s in self.active if not s.finished]
        self._drop_cancelled_waiting()

    def _step(self, seq: Sequence, prefill: bool) -> None:
        if seq.finished:
            return
        if seq.cancelled:
            seq.abort("cancelled")
            self._account(seq)
            return
        try:
            self.runner.prefill(seq) if prefill else self.runner.decode(seq)
        except Exception as exc:  # one request fails alone; the server keeps serving
            logger.exception("generation failed for request %s", seq.request_id)
            seq.abort("error", f"{type(exc).__name__}: {exc}")
            if isinstance(exc, torch.OutOfMemoryError):
                self.runner.release_memory()
        if seq.finished:
            self._account(seq)

    def _drop_cancelled_waiting(self) -> None:
        with self._wake:
            cancelled = [s for s in self.waiting if s.cancelled]
            for seq in cancelled:
                self.waiting.remove(seq)
        for seq in cancelled:
            seq.abort("cancelled")
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
