"""A scheduled step flattened into the model's inputs: one row of tokens over all sequences, each
with its position and the cache slot its key and value go to, plus what each sequence's attention
needs (queries this step, context length, block table) and which rows are sampled; and small host
lists sent to the device without waiting for it (`device_tensor`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .sequence import Sequence


def device_tensor(values, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`values` (a list) as a tensor on `device`, without waiting for the device: a plain
    `torch.tensor(values, device="cuda")` copies from pageable memory and so waits for every kernel
    queued before it; this one goes through pinned memory, copied asynchronously (the pinned
    allocator keeps the block until the copy is done)."""
    if device.type != "cuda":
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.tensor(values, dtype=dtype, pin_memory=True).to(device, non_blocking=True)


@dataclass
class StepTokens:
    ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    q_len: list[int] = field(default_factory=list)  # per sequence: tokens computed this step
    context: list[int] = field(default_factory=list)  # per sequence: context length after it
    tables: list[list[int]] = field(default_factory=list)  # per sequence: blocks of that context
    starts: list[int] = field(default_factory=list)  # per sequence: its first row
    sample_rows: list[int] = field(default_factory=list)  # rows whose logits pick a token
    to_sample: list[Sequence] = field(default_factory=list)


def flatten_step(scheduled: list[tuple[Sequence, int]], block_size: int) -> StepTokens:
    """The next `n` tokens of each (sequence, n), in order; a sequence is sampled when this step
    computes its last token. A token not on the host yet (sampled by the step before, still on
    the device: async scheduling) gets id 0 here; the runner copies the real one in on the
    device."""
    step, bs = StepTokens(), block_size
    for seq, n in scheduled:
        start, table = seq.num_computed, seq.block_table
        row = len(step.ids)
        known = seq.token_ids[start:start + n]
        step.ids.extend(known)
        step.ids.extend([0] * (n - len(known)))
        step.positions.extend(range(start, start + n))
        step.slots.extend(table[p // bs] * bs + p % bs for p in range(start, start + n))
        step.q_len.append(n)
        step.context.append(start + n)
        step.tables.append(table[: -(-(start + n) // bs)])
        step.starts.append(row)
        if start + n >= len(seq.token_ids):
            step.sample_rows.append(row + n - 1)
            step.to_sample.append(seq)
    return step
