"""The paged KV cache's bookkeeping: which fixed-size blocks of the pool each sequence holds.

Blocks are reference-counted. A block that is full is content-addressed: its hash chains the hash of
the block before it with its own token ids, so two sequences whose token ids agree up to the end of
a block (the same system prompt and tools, a chat re-sent with one more turn, the `n` choices of one
request) can share it instead of computing it again (prefix caching). A freed block keeps its hash
and contents until it is handed out again, least recently freed first, so a later request can still
hit it. The tensors themselves live in the runner; this module only moves integers.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .sequence import Sequence


def block_hash(previous: int, token_ids: tuple[int, ...]) -> int:
    return hash((previous, token_ids))


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True):
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # Blocks nobody holds, oldest-freed first; cached ones among them can still be hit.
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached: dict[int, int] = {}  # content hash -> block id
        self.hit_tokens = 0
        self.query_tokens = 0

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        return len(self.free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        """New blocks `seq` needs to hold `num_tokens` more tokens in the cache."""
        total = -(-(seq.num_computed + num_tokens) // self.block_size)
        return max(0, total - len(seq.block_table))

    # -- prefix cache ---------------------------------------------------------------------------
    def match_prefix(self, seq: Sequence) -> list[int]:
        """The cached blocks that hold `seq`'s leading full blocks. At least one token is always
        left to compute, since the step that computes it is the one that yields the next logits."""
        if not self.prefix_caching:
            return []
        tokens = seq.token_ids
        usable = (len(tokens) - 1) // self.block_size
        hits, previous = [], -1
        for i in range(usable):
            previous = block_hash(previous, tuple(tokens[i * self.block_size:(i + 1) * self.block_size]))
            block_id = self.cached.get(previous)
            if block_id is None:
                break
            hits.append(block_id)
        return hits

    def admit(self, seq: Sequence, hits: list[int]) -> None:
        """Give a newly scheduled sequence its cached prefix blocks."""
        for block_id in hits:
            self._take(block_id)
        seq.block_table = list(hits)
        seq.block_hashes = []
        previous = -1
        for i in range(len(hits)):
            previous = block_hash(previous, tuple(
                seq.token_ids[i * self.block_size:(i + 1) * self.block_size]))
            seq.block_hashes.append(previous)
        seq.num_computed = len(hits) * self.block_size
        self.query_tokens += len(seq.token_ids)
        self.hit_tokens += seq.num_computed

    # -- allocation -----------------------------------------------------------------------------
    def can_allocate(self, count: int) -> bool:
        return count <= len(self.free)

    def allocate(self, seq: Sequence, num_tokens: int) -> None:
        """Append enough fresh blocks to `seq`'s table for `num_tokens` more tokens."""
        for _ in range(self.blocks_needed(seq, num_tokens)):
            block_id = next(iter(self.free))
            block = self.blocks[block_id]
            if block.hash is not None and self.cached.get(block.hash) == block_id:
                del self.cached[block.hash]  # its old contents are about to be overwritten
            block.hash = None
            self._take(block_id)
            seq.block_table.append(block_id)

    def _take(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free[block_id]
        block.ref_count += 1

    def commit(self, seq: Sequence) -> None:
        """Register the blocks that `seq`'s steps filled, so later requests can reuse them: those
        whose tokens are all computed and known (under async scheduling the last computed one may
        not be read back yet)."""
        if not self.prefix_caching:
            return
        tokens = seq.token_ids
        full = min(min(seq.num_computed, len(tokens)) // self.block_size, len(seq.block_table))
        previous = seq.block_hashes[-1] if seq.block_hashes else -1
        for i in range(len(seq.block_hashes), full):
            previous = block_hash(previous, tuple(tokens[i * self.block_size:(i + 1) * self.block_size]))
            seq.block_hashes.append(previous)
            block = self.blocks[seq.block_table[i]]
            if block.hash is None and previous not in self.cached:
                block.hash = previous
                self.cached[previous] = block.block_id

    def release(self, seq: Sequence) -> None:
        """Drop `seq`'s hold on its blocks (finished, cancelled or preempted)."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
                if block.hash is None:  # nothing to hit: hand it out first
                    self.free.move_to_end(block_id, last=False)
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed = 0

    def stats(self) -> dict[str, float | int | bool]:
        return {
            "block_size": self.block_size,
            "capacity_tokens": self.num_blocks * self.block_size,
            "blocks_total": self.num_blocks,
            "blocks_used": self.num_used,
            "blocks_free": self.num_free,
            "prefix_caching": self.prefix_caching,
            "prefix_cache_hit_tokens": self.hit_tokens,
            "prefix_cache_query_tokens": self.query_tokens,
            "prefix_cache_hit_rate": round(self.hit_tokens / self.query_tokens, 4)
            if self.query_tokens else 0.0,
        }
