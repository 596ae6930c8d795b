"""The GPU step: turns the scheduler's batch into the Triton forward's inputs and runs it, replaying
a CUDA graph when the step is decodes only and fits a captured bucket (cuda_graphs.py) or is one
sequence's prompt chunk alone (prompt_graphs.py), eagerly otherwise.

The step's tokens are laid out decode rows first, then prompt chunks. Everything the kernels read
(token ids, positions, slots, the attention tiles and block tables) is packed on the host into one
pinned int32 buffer and sent in one copy.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .cuda_graphs import DecodeGraphs
from .fast_qwen3 import FastQwen3
from .kernels.paged_attention import AttentionTiles, decode_parts, prompt_parts, tile_plan
from .sequence import Sequence
from .step_inputs import device_tensor, flatten_step

logger = logging.getLogger(__name__)

PREFILL_TILE = 32  # query tokens per attention program in a prompt chunk (× the query group)


def multiprocessors(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1  # the Triton interpreter (CPU), used only to test the kernels


class FastStep:
    def __init__(self, fast: FastQwen3, kv_cache, block_size: int, device: torch.device,
                 graphs: DecodeGraphs | None, scratch_block: int):
        self.fast, self.kv_cache, self.block_size = fast, kv_cache, block_size
        self.scratch_block = scratch_block  # owned by no sequence: padding and warm-up write here
        self.device, self.graphs = device, graphs
        self.prompt_graphs = None  # set by the runner once captured and checked
        self.sms = multiprocessors(device)
        self._host = self._device = torch.zeros(0, dtype=torch.int32)
        # Recorded after each copy out of `_host`: the next step waits for it before refilling
        # the buffer (a step that samples nothing reads nothing back, so nothing else waits).
        self._sent = torch.cuda.Event() if device.type == "cuda" else None

    def run(self, scheduled: list[tuple[Sequence, int]], carried: torch.Tensor | None = None,
            ) -> tuple[list[Sequence], torch.Tensor]:
        """Compute `n` more tokens of each (sequence, n); logits of the sequences now complete.
        `carried`: the device ids of the first rows (decodes), which the host does not have yet."""
        ordered = [x for x in scheduled if x[1] == 1] + [x for x in scheduled if x[1] > 1]
        step = flatten_step(ordered, self.block_size)
        decodes = sum(1 for _, n in ordered if n == 1)
        graphs = self.graphs
        if decodes == len(ordered) and graphs is not None and graphs.bucket(decodes) is not None:
            logits = graphs.replay(step.ids, step.positions, step.slots, step.context, step.tables,
                                   carried)
            if len(step.sample_rows) < decodes:
                logits = logits[device_tensor(step.sample_rows, self.device)]
            return step.to_sample, logits
        prompts = self.prompt_graphs
        if (len(ordered) == 1 and not decodes and prompts is not None
                and prompts.bucket(len(step.ids)) is not None):
            logits = prompts.replay(step.ids, step.positions, step.slots, step.context[0],
                                    step.tables[0])
            return (step.to_sample, logits) if step.to_sample else ([], logits[:0])
        hidden = self._eager(step.ids, step.positions, step.slots, step.q_len, step.context,
                             step.tables, decodes, carried=carried)
        if not step.to_sample:
            return [], hidden[:0]
        rows = device_tensor(step.sample_rows, self.device)
        return step.to_sample, self.fast.logits(hidden[rows])

    def eager_prompt(self, ids: list[int], positions: list[int], slots: list[int], context: int,
                     table: list[int], rows: int | None = None,
                     parts: int | None = None) -> torch.Tensor:
        """Logits (1, vocab) of a lone prompt chunk's last token, run eagerly. With `rows`, the
        step is padded to that many tokens as a prompt graph pads it (a second sequence whose keys
        and values go to the scratch block), so its matrix products have the graph's shapes and
        round alike; `parts` splits its attention tiles' context as the graph's are split."""
        n = len(ids)
        pad = (rows or n) - n
        q_len, contexts, tables = [n], [context], [table]
        if pad:
            bs, block = self.block_size, self.scratch_block
            ids = ids + [0] * pad
            positions = positions + list(range(pad))
            slots = slots + [block * bs + p % bs for p in range(pad)]
            q_len.append(pad)
            contexts.append(pad)
            tables.append([block] * -(-pad // bs))
        hidden = self._eager(ids, positions, slots, q_len, contexts, tables, 0, parts)
        return self.fast.logits(hidden[n - 1:n])

    def _eager(self, ids, positions, slots, q_len, context, tables, decodes: int,
               parts: int | None = None, carried: torch.Tensor | None = None) -> torch.Tensor:
        """The step run eagerly; `parts` forces the prompt tiles' context splits (warm-up);
        `carried` overwrites the first ids on the device."""
        groups = [range(0, decodes), range(decodes, len(q_len))]
        arrays: list[np.ndarray] = [np.asarray(ids), np.asarray(positions), np.asarray(slots)]
        specs = []
        q_start = np.concatenate([[0], np.cumsum(q_len)[:-1]]).astype(np.int64)
        for group, block_q in zip(groups, (1, PREFILL_TILE), strict=True):
            if not len(group):
                continue
            lens = [q_len[i] for i in group]
            tile_seq, tile_q0 = tile_plan(lens, block_q)
            width = max(len(tables[i]) for i in group)
            grid = np.zeros((len(group), width), dtype=np.int64)
            for row, i in enumerate(group):
                grid[row, :len(tables[i])] = tables[i]
            fields = [tile_seq, tile_q0, q_start[group.start:group.stop], lens,
                      [context[i] for i in group], grid.reshape(-1), [width]]
            if block_q == 1:
                splits = decode_parts(len(group), self.fast.kv_heads, self.sms)
            else:
                splits = parts or prompt_parts(len(tile_seq), self.fast.kv_heads, self.sms,
                                               max(context[i] for i in group))
            specs.append((len(arrays), block_q, len(tile_seq), splits,
                          int(q_start[group.start]), sum(lens)))
            arrays.extend(np.asarray(f) for f in fields)
        views = self._send(arrays)
        if carried is not None:
            views[0][:len(carried)].copy_(carried)
        launches = []
        for first, block_q, num_tiles, splits, first_token, tokens in specs:
            v = views[first:first + 7]
            launches.append((AttentionTiles(v[0], v[1], v[2], v[3], v[4], v[5], v[6], block_q,
                                            splits, first_token=first_token, tokens=tokens),
                             num_tiles))
        return self.fast.forward(views[0], views[1], views[2], launches, self.kv_cache,
                                 self.block_size)

    def _send(self, parts: list[np.ndarray]) -> list[torch.Tensor]:
        """One host-to-device copy of all the int32 arrays; device views of each, in order."""
        sizes = [p.size for p in parts]
        # Each array starts 16 bytes in: Triton specialises kernels on pointer alignment, and an
        # unaligned view would compile another variant of the kernel in the middle of serving.
        starts = np.cumsum([0] + [-(-n // 4) * 4 for n in sizes])
        total = int(starts[-1])
        if total > self._host.numel():
            size = max(1 << 16, 1 << (total - 1).bit_length())
            self._host = torch.zeros(size, dtype=torch.int32, pin_memory=self.device.type == "cuda")
            self._device = torch.zeros(size, dtype=torch.int32, device=self.device)
        if self._sent is not None:
            self._sent.synchronize()
        host = self._host.numpy()
        for p, n, start in zip(parts, sizes, starts, strict=False):
            host[start:start + n] = p.reshape(-1)
        self._device[:total].copy_(self._host[:total], non_blocking=True)
        if self._sent is not None:
            self._sent.record()
        return [self._device[start:start + n] for n, start in zip(sizes, starts, strict=False)]

    def warm_up(self, max_decodes: int) -> None:
        """Compile the eager step's kernels now rather than in the middle of serving (where each
        took 0.3-0.45 s on an H200, stalling every stream): one prompt chunk of a block's worth of
        tokens in every number of context splits, then decode rows in every number of context
        splits a step of 1 to `max_decodes` of them takes, all written into the scratch block
        (owned by no sequence). A captured graph's launches do not count: Triton compiles a
        variant per pointer alignment, and the graphs' block tables are not 16-byte aligned as
        the eager step's are."""
        n, block = self.block_size, self.scratch_block
        slots = list(range(block * n, block * n + n))
        for parts in (1, 2, 4, 8, 16):  # every split count prompt_parts gives
            self._eager([0] * n, list(range(n)), slots, [n], [n], [[block]], 0, parts)
        splits: dict[int, int] = {}
        for rows in range(1, max_decodes + 1):
            splits.setdefault(decode_parts(rows, self.fast.kv_heads, self.sms), rows)
        for rows in splits.values():
            self._eager([0] * rows, [0] * rows, [block * n] * rows, [1] * rows, [1] * rows,
                        [[block]] * rows, rows)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
