"""CUDA graphs of a lone prompt chunk: one sequence computing up to 256 prompt tokens (its whole
prompt, or the part the prefix cache did not have) with nothing else in the step, which is what an
idle server does for each new request. Replaying one replaces launching the eager step's ~400
kernels from Python, about 10 ms on an H200: more than the GPU's own work at these sizes, and most
of a short prompt's time to first token.

The chunk is padded to the next bucket. Padding tokens come after the real ones, write their keys
and values into the scratch block (owned by no sequence), and their queries lie past the chunk's
length, which the attention kernel masks; only the last real token's logits are computed. The
attention tiles' context is split in parts (`parts`), so a chunk behind a long cached prefix is
walked by many programs, not by one per tile and KV head. All inputs live in one static int32
buffer, filled on the host and sent in one copy per replay.

`check()` compares replays with the eager step once at start-up (one tile and several, with and
without a cached prefix); the engine keeps the graphs only if they agree.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from .cuda_graphs import capture_graph
from .fast_qwen3 import FastQwen3
from .fast_step import PREFILL_TILE
from .kernels.paged_attention import AttentionTiles, decode_parts

logger = logging.getLogger(__name__)

PROMPT_BUCKETS = (16, 32, 64, 96, 128, 160, 192, 256)
# What `check()` runs: (cached prefix, chunk) — one attention tile, padded; and several, padded,
# one of them padding only, behind a prefix. It writes CHECK_TOKENS tokens' keys and values.
CHECK_PROMPTS = ((0, 11), (9, 200))
CHECK_TOKENS = max(cached + n for cached, n in CHECK_PROMPTS)


class PromptGraphs:
    def __init__(self, fast: FastQwen3, kv_cache, block_size: int, max_blocks_per_seq: int,
                 scratch_block: int, device: torch.device, pool=None):
        self.fast, self.kv_cache, self.block_size = fast, kv_cache, block_size
        self.scratch_block, self.device, self.pool = scratch_block, device, pool
        self.sms = (torch.cuda.get_device_properties(device).multi_processor_count
                    if device.type == "cuda" else 1)
        top = PROMPT_BUCKETS[-1]
        tiles = -(-top // PREFILL_TILE)
        sizes = {"ids": top, "positions": top, "slots": top, "tile_seq": tiles, "tile_q0": tiles,
                 "q_start": 1, "q_len": 1, "context": 1, "stride": 1, "sample": 1,
                 "tables": max_blocks_per_seq}
        self._layout, start = {}, 0
        for name, size in sizes.items():  # each field 16-byte aligned, as Triton specialises
            self._layout[name] = start
            start += -(-size // 4) * 4
        self.host = torch.zeros(start, dtype=torch.int32, pin_memory=device.type == "cuda")
        self.host_np = self.host.numpy()
        self.buffer = torch.zeros(start, dtype=torch.int32, device=device)
        h, layout = self.host_np, self._layout
        h[layout["tile_seq"]:layout["tile_seq"] + tiles] = 0  # one sequence ...
        h[layout["tile_q0"]:layout["tile_q0"] + tiles] = np.arange(tiles) * PREFILL_TILE
        h[layout["q_start"]] = 0  # ... whose queries start the step
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.capture_seconds = 0.0
        # Chunks of one long prompt replay back to back with nothing read in between: the host
        # buffer is refilled only once the previous copy out of it is done.
        self._sent = torch.cuda.Event() if device.type == "cuda" else None

    def _view(self, name: str, n: int) -> torch.Tensor:
        start = self._layout[name]
        return self.buffer[start:start + n]

    def parts(self, bucket: int) -> int:
        """Context splits of a bucket's attention tiles: enough programs to fill the card twice
        (at most 16), as for decode rows. The kernel divides each replay's own context among
        them, so a chunk behind a long cached prefix (a shared system prompt) is not walked by
        one program per tile and KV head; over a short context the extra parts read nothing."""
        return decode_parts(-(-bucket // PREFILL_TILE), self.fast.kv_heads, self.sms)

    def _step(self, bucket: int) -> torch.Tensor:
        tiles = -(-bucket // PREFILL_TILE)
        meta = AttentionTiles(
            tile_seq=self._view("tile_seq", tiles), tile_q0=self._view("tile_q0", tiles),
            q_start=self._view("q_start", 1), q_len=self._view("q_len", 1),
            context=self._view("context", 1), block_tables=self.buffer[self._layout["tables"]:],
            table_stride=self._view("stride", 1), block_q=PREFILL_TILE,
            parts=self.parts(bucket), first_token=0, tokens=bucket)
        hidden = self.fast.forward(self._view("ids", bucket), self._view("positions", bucket),
                                   self._view("slots", bucket), [(meta, tiles)], self.kv_cache,
                                   self.block_size)
        return self.fast.logits(hidden.index_select(0, self._view("sample", 1).long()))

    def bucket(self, tokens: int) -> int | None:
        return next((b for b in sorted(self.graphs) if b >= tokens), None)

    def capture(self) -> None:
        """Capture every bucket, the largest first, in `pool` (shared with the decode graphs)."""
        start = time.perf_counter()
        scratch = self.scratch_block * self.block_size
        for bucket in sorted(PROMPT_BUCKETS, reverse=True):
            n = min(bucket, self.block_size)  # the scratch block's slots only
            self._fill(list(range(n)), list(range(n)), list(range(scratch, scratch + n)), n,
                       [self.scratch_block], bucket)
            self.buffer.copy_(self.host)
            graph, logits, self.pool = capture_graph(lambda b=bucket: self._step(b), self.device,
                                                     self.pool)
            self.graphs[bucket] = (graph, logits)
        torch.cuda.synchronize(self.device)
        self.capture_seconds = time.perf_counter() - start
        logger.info("Captured %d CUDA graphs of a lone prompt chunk (up to %d tokens) in %.1f s",
                    len(self.graphs), max(self.graphs), self.capture_seconds)

    def _fill(self, ids: list[int], positions: list[int], slots: list[int], context: int,
              table: list[int], bucket: int) -> int:
        """Write a chunk into the host buffer, padded to `bucket` tokens; return the ints used."""
        n, h, layout = len(ids), self.host_np, self._layout
        scratch = self.scratch_block * self.block_size
        padding = scratch + np.arange(bucket - n) % self.block_size
        for name, values, pad in (("ids", ids, 0), ("positions", positions, 0),
                                  ("slots", slots, padding)):
            start = layout[name]
            h[start:start + n] = values
            h[start + n:start + bucket] = pad
        h[layout["q_len"]] = n
        h[layout["context"]] = context
        h[layout["stride"]] = len(table)
        h[layout["sample"]] = n - 1
        start = layout["tables"]
        h[start:start + len(table)] = table
        return start + len(table)

    def replay(self, ids: list[int], positions: list[int], slots: list[int], context: int,
               table: list[int]) -> torch.Tensor:
        """Logits (1, vocab) of the chunk's last token; its keys and values are in the cache."""
        bucket = self.bucket(len(ids))
        if self._sent is not None:
            self._sent.synchronize()
        used = self._fill(ids, positions, slots, context, table, bucket)
        self.buffer[:used].copy_(self.host[:used], non_blocking=True)
        if self._sent is not None:
            self._sent.record()
        graph, logits = self.graphs[bucket]
        graph.replay()
        return logits

    def check(self, eager, blocks: list[int]) -> float:
        """The largest relative difference between a replay and the eager step padded to the same
        bucket (`eager(ids, positions, slots, context, table, rows, parts)` → logits: the same
        kernels on the same shapes and context splits, so they agree to rounding even where a
        model amplifies it) over CHECK_PROMPTS, written into `blocks` (free ones, enough for
        CHECK_TOKENS tokens)."""
        bs, worst = self.block_size, 0.0
        for cached, n in CHECK_PROMPTS:
            ids = [1000 + 37 * i for i in range(cached + n)]
            slots = [blocks[p // bs] * bs + p % bs for p in range(cached + n)]
            context = cached + n
            table = blocks[:-(-context // bs)]
            if cached:
                eager(ids[:cached], list(range(cached)), slots[:cached], cached, table, None)
            args = (ids[cached:], list(range(cached, context)), slots[cached:], context, table)
            bucket = self.bucket(n)
            expected = eager(*args, bucket, self.parts(bucket)).float()
            got = self.replay(*args).float()
            worst = max(worst, (got - expected).norm().item() / max(expected.norm().item(), 1e-30))
        return worst
