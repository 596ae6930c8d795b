"""CUDA graphs of the decode step: one per batch-size bucket, captured at start-up, replayed with
the batch padded to the next bucket.

A graph replays fixed kernels on fixed memory, so every input lives in one static int32 buffer
(token ids, positions, cache slots, context lengths, the block tables' row stride, the block
tables) that each step overwrites with a single host-to-device copy of the part it uses. Padding rows
write their key and value into a scratch block no sequence owns and attend to that one slot, so
they cost a little work and touch nothing real. The logits come out of the graph; sampling runs
right after it on them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from .fast_qwen3 import FastQwen3
from .kernels.paged_attention import AttentionTiles, decode_parts

logger = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
           384, 448, 512, 640, 768, 896, 1024)


def capture_graph(step: Callable[[], torch.Tensor], device: torch.device, pool=None):
    """Run `step` once (it compiles its kernels and settles the allocator), then capture it in a
    CUDA graph in `pool` (a new one when None). Returns (graph, its output, the pool)."""
    step()
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        output = step()
    return graph, output, pool if pool is not None else graph.pool()


def buckets_up_to(max_batch: int) -> list[int]:
    chosen = [b for b in BUCKETS if b < max_batch]
    return chosen + [max_batch]


class DecodeGraphs:
    def __init__(self, fast: FastQwen3, kv_cache, block_size: int, max_batch: int,
                 max_blocks_per_seq: int, scratch_block: int, device: torch.device):
        self.fast, self.kv_cache, self.block_size = fast, kv_cache, block_size
        self.max_batch, self.width = max_batch, max_blocks_per_seq
        self.scratch_block = scratch_block
        self.device = device
        b = max_batch
        self._layout = {"ids": 0, "positions": b, "slots": 2 * b, "context": 3 * b,
                        "stride": 4 * b, "tables": 4 * b + 1}
        size = 4 * b + 1 + b * max_blocks_per_seq
        self.buffer = torch.zeros(size, dtype=torch.int32, device=device)
        self.host = torch.zeros(size, dtype=torch.int32, pin_memory=True)
        self.host_np = self.host.numpy()
        rows = torch.arange(b, dtype=torch.int32, device=device)
        self._rows, self._zeros = rows, torch.zeros(b, dtype=torch.int32, device=device)
        self._ones = torch.ones(b, dtype=torch.int32, device=device)
        self.sms = torch.cuda.get_device_properties(device).multi_processor_count
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._sent = torch.cuda.Event()  # the last copy out of `host`: done before refilling it
        self.pool = None
        self.capture_seconds = 0.0

    def _view(self, name: str, n: int) -> torch.Tensor:
        start = self._layout[name]
        return self.buffer[start:start + n]

    def _step(self, batch: int) -> torch.Tensor:
        tiles = AttentionTiles(
            tile_seq=self._rows[:batch], tile_q0=self._zeros[:batch], q_start=self._rows[:batch],
            q_len=self._ones[:batch], context=self._view("context", batch),
            block_tables=self.buffer[self._layout["tables"]:], table_stride=self._view("stride", 1),
            block_q=1, parts=decode_parts(batch, self.fast.kv_heads, self.sms))
        hidden = self.fast.forward(self._view("ids", batch), self._view("positions", batch),
                                   self._view("slots", batch), [(tiles, batch)], self.kv_cache,
                                   self.block_size)
        return self.fast.logits(hidden)

    def capture(self) -> None:
        """Capture every bucket, the largest first so the smaller ones reuse its memory pool."""
        start = time.perf_counter()
        self._fill([], [], [], [], [], self.max_batch)
        torch.cuda.synchronize(self.device)
        for batch in reversed(buckets_up_to(self.max_batch)):
            graph, logits, self.pool = capture_graph(lambda b=batch: self._step(b), self.device,
                                                     self.pool)
            self.graphs[batch] = (graph, logits)
        torch.cuda.synchronize(self.device)
        self.capture_seconds = time.perf_counter() - start
        logger.info("Captured %d CUDA graphs of the decode step (batch 1 to %d) in %.1f s",
                    len(self.graphs), self.max_batch, self.capture_seconds)

    def bucket(self, batch: int) -> int | None:
        return next((b for b in sorted(self.graphs) if b >= batch), None)

    def _fill(self, ids: list[int], positions: list[int], slots: list[int], contexts: list[int],
              tables: list[list[int]], batch: int) -> int:
        """Write a step into the host buffer, padded to `batch` rows; return the ints used."""
        n, h, layout = len(ids), self.host_np, self._layout
        scratch_slot = self.scratch_block * self.block_size
        width = max((len(t) for t in tables), default=1)
        for name, values, pad in (("ids", ids, 0), ("positions", positions, 0),
                                  ("slots", slots, scratch_slot), ("context", contexts, 1)):
            start = layout[name]
            h[start:start + n] = values
            h[start + n:start + batch] = pad
        h[layout["stride"]] = width
        start = layout["tables"]
        grid = h[start:start + batch * width].reshape(batch, width)
        grid[:] = 0
        for i, table in enumerate(tables):
            grid[i, :len(table)] = table
        grid[n:, 0] = self.scratch_block
        return start + batch * width

    def replay(self, ids: list[int], positions: list[int], slots: list[int], contexts: list[int],
               tables: list[list[int]], carried: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (n, vocab) of one decode step over n sequences (n at most max_batch). `carried`
        (on the device) replaces the first of `ids`: tokens the host has not read back yet."""
        n = len(ids)
        batch = self.bucket(n)
        self._sent.synchronize()
        used = self._fill(ids, positions, slots, contexts, tables, batch)
        self.buffer[:used].copy_(self.host[:used], non_blocking=True)
        self._sent.record()
        if carried is not None:
            self._view("ids", len(carried)).copy_(carried)
        graph, logits = self.graphs[batch]
        graph.replay()
        return logits[:n]
