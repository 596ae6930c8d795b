"""The paged KV cache's bookkeeping on its own: block counts, release, reference counts of shared
prefix blocks, the prefix cache's hits (never the last token, freed blocks still hit, reallocated
blocks never hit stale) and its statistics. Pure integers: no model, no tensors."""

from __future__ import annotations

from inference.block_manager import BlockManager
from inference.detokenizer import IncrementalDetokenizer
from inference.sequence import Sequence
from inference.types import SamplingParams

BS = 4  # tokens per block in these tests


def seq(prompt_ids: list[int], request_id: str = "r") -> Sequence:
    return Sequence(request_id, list(prompt_ids), SamplingParams(max_tokens=4), set(),
                    IncrementalDetokenizer(None), lambda chunk: None)


def compute(bm: BlockManager, s: Sequence) -> None:
    """What the scheduler does for a sequence it admits and prefills in one step: take its cached
    prefix, allocate the rest, mark every token computed and register the full blocks."""
    bm.admit(s, bm.match_prefix(s))
    n = len(s.token_ids) - s.num_computed
    bm.allocate(s, n)
    s.num_computed += n
    bm.commit(s)


def ref_counts(bm: BlockManager, block_ids: list[int]) -> list[int]:
    return [bm.blocks[b].ref_count for b in block_ids]


def test_blocks_needed_rounds_up_over_computed_and_new_tokens():
    bm = BlockManager(8, BS)
    s = seq(list(range(10)))
    assert bm.blocks_needed(s, 10) == 3
    assert bm.blocks_needed(s, 8) == 2
    assert bm.blocks_needed(s, 1) == 1
    bm.allocate(s, 10)
    assert len(s.block_table) == 3 and len(set(s.block_table)) == 3
    assert (bm.num_used, bm.num_free) == (3, 5)
    assert bm.blocks_needed(s, 10) == 0  # already held
    s.num_computed = 10
    assert bm.blocks_needed(s, 2) == 0  # tokens 11 and 12 fit in the third block
    assert bm.blocks_needed(s, 3) == 1
    assert bm.blocks_needed(s, 7) == 2


def test_allocate_covers_num_computed_plus_n():
    bm = BlockManager(8, BS)
    s = seq(list(range(20)))
    bm.allocate(s, 8)
    assert len(s.block_table) == 2
    s.num_computed = 8
    bm.allocate(s, 5)  # 13 tokens: 4 blocks in all
    assert len(s.block_table) == 4 and bm.num_used == 4
    s.num_computed = 13
    bm.allocate(s, 3)  # 16 tokens: still 4
    assert len(s.block_table) == 4 and bm.num_used == 4
    bm.allocate(s, 4)  # 17 tokens: a fifth
    assert len(s.block_table) == 5 and bm.num_used == 5
    assert all(bm.blocks[b].ref_count == 1 for b in s.block_table)


def test_can_allocate_counts_free_blocks():
    bm = BlockManager(4, BS)
    assert bm.can_allocate(4) and not bm.can_allocate(5)
    s = seq(list(range(9)))
    bm.allocate(s, 9)
    assert bm.can_allocate(1) and not bm.can_allocate(2)


def test_release_returns_every_block_to_free():
    bm = BlockManager(6, BS)
    a, b = seq(list(range(10)), "a"), seq(list(range(100, 105)), "b")
    bm.allocate(a, 10)
    bm.allocate(b, 5)
    assert bm.num_free == 1
    a.num_computed = 10
    bm.release(a)
    assert bm.num_free == 4
    assert a.block_table == [] and a.block_hashes == [] and a.num_computed == 0
    bm.release(b)
    assert bm.num_free == bm.num_blocks == 6 and bm.num_used == 0
    assert all(block.ref_count == 0 for block in bm.blocks)


def test_shared_prefix_blocks_are_reference_counted():
    bm = BlockManager(8, BS)
    prefix = list(range(8))  # two full blocks
    a = seq(prefix + [50, 51], "a")
    compute(bm, a)
    assert len(a.block_table) == 3 and bm.num_used == 3

    b = seq(prefix + [60, 61, 62], "b")
    hits = bm.match_prefix(b)
    assert hits == a.block_table[:2]
    bm.admit(b, hits)
    assert b.block_table == hits and b.num_computed == 8 == bm.hit_tokens
    assert ref_counts(bm, hits) == [2, 2]
    assert bm.num_used == 3  # sharing took no new block
    bm.allocate(b, 3)
    assert len(b.block_table) == 3 and b.block_table[2] != a.block_table[2]
    assert bm.num_used == 4

    bm.release(a)
    assert ref_counts(bm, hits) == [1, 1]
    assert bm.num_used == 3  # a's own last block only went back
    assert all(h not in bm.free for h in hits)
    bm.release(b)
    assert ref_counts(bm, hits) == [0, 0] and bm.num_used == 0


def test_prefix_match_never_covers_the_last_token():
    bm = BlockManager(8, BS)
    tokens = list(range(12))  # exactly three full blocks
    compute(bm, seq(tokens, "a"))
    same = seq(tokens, "b")
    assert len(bm.match_prefix(same)) == 2  # at most k - 1 of k full blocks
    bm.admit(same, bm.match_prefix(same))
    assert same.num_computed == 8 < len(same.token_ids)
    one_more = seq(tokens + [99], "c")
    assert len(bm.match_prefix(one_more)) == 3
    # Shorter than one block plus a token: nothing to match.
    assert bm.match_prefix(seq(tokens[:4], "d")) == []
    assert len(bm.match_prefix(seq(tokens[:5], "e"))) == 1


def test_match_stops_at_the_first_differing_block():
    bm = BlockManager(8, BS)
    compute(bm, seq(list(range(13)), "a"))
    changed = list(range(13))
    changed[5] = 999  # second block differs; the third matches its own tokens but not the chain
    assert len(bm.match_prefix(seq(changed, "b"))) == 1
    changed_first = list(range(13))
    changed_first[0] = 999
    assert bm.match_prefix(seq(changed_first, "c")) == []


def test_freed_hashed_block_is_still_hit_until_reallocated():
    bm = BlockManager(8, BS)
    tokens = list(range(9))
    a = seq(tokens, "a")
    compute(bm, a)
    cached = a.block_table[:2]
    bm.release(a)
    assert bm.num_used == 0 and all(b in bm.free for b in cached)

    again = seq(tokens, "b")
    hits = bm.match_prefix(again)
    assert hits == cached
    bm.admit(again, hits)
    assert ref_counts(bm, hits) == [1, 1] and all(b not in bm.free for b in hits)
    assert bm.num_used == 2 and again.num_computed == 8


def test_unhashed_blocks_are_handed_out_before_cached_ones():
    bm = BlockManager(4, BS)
    a = seq(list(range(9)), "a")  # two full (hashed) blocks and a partial one
    compute(bm, a)
    partial = a.block_table[2]
    bm.release(a)
    b = seq(list(range(100, 104)), "b")
    bm.allocate(b, 4)
    assert b.block_table == [partial]
    # The cached prefix survived that allocation.
    assert len(bm.match_prefix(seq(list(range(9)), "c"))) == 2


def test_reallocated_block_loses_its_hash():
    bm = BlockManager(4, BS)
    tokens = list(range(9))
    a = seq(tokens, "a")
    compute(bm, a)
    first, second = a.block_table[:2]
    bm.release(a)

    # Three fresh blocks: the partial block, the never-used one, then the least recently freed
    # cached block (a's second: release frees from the end).
    b = seq(list(range(200, 212)), "b")
    bm.allocate(b, 12)
    assert second in b.block_table and first not in b.block_table
    assert bm.blocks[second].hash is None
    assert len(bm.match_prefix(seq(tokens, "c"))) == 1  # only the first block still hits
    bm.release(b)

    # Now every block is overwritten: no stale hit, even though the old hashes would chain.
    d = seq(list(range(300, 316)), "d")
    bm.allocate(d, 16)
    assert all(block.hash is None for block in bm.blocks)
    assert bm.match_prefix(seq(tokens, "e")) == []
    assert bm.cached == {}


def test_duplicate_content_is_registered_once():
    bm = BlockManager(8, BS)
    tokens = list(range(9))
    a, b = seq(tokens, "a"), seq(tokens, "b")
    # Both admitted before either computed anything: no hit, each computes its own copy.
    for s in (a, b):
        bm.admit(s, bm.match_prefix(s))
        bm.allocate(s, 9)
    for s in (a, b):
        s.num_computed = 9
        bm.commit(s)
    assert len(bm.cached) == 2
    assert bm.match_prefix(seq(tokens, "c")) == a.block_table[:2]
    assert b.block_hashes == a.block_hashes  # b knows its content, only its blocks are unregistered
    registered, unregistered = a.block_table[:2], b.block_table[:2]
    assert all(bm.blocks[x].hash is None for x in unregistered)
    bm.release(b)
    bm.release(a)
    # b's copies are handed out first; reusing them leaves a's registered blocks hittable.
    c = seq(list(range(500, 508)), "c")
    bm.allocate(c, 8)
    assert set(c.block_table) & set(registered) == set()
    assert bm.match_prefix(seq(tokens, "d")) == registered


def test_commit_registers_only_full_computed_blocks():
    bm = BlockManager(8, BS)
    s = seq(list(range(11)))
    bm.admit(s, [])
    bm.allocate(s, 6)
    s.num_computed = 6  # a first prefill chunk: one full block, half of the second
    bm.commit(s)
    assert len(s.block_hashes) == 1 and len(bm.cached) == 1
    bm.allocate(s, 5)
    s.num_computed = 11
    bm.commit(s)
    assert len(s.block_hashes) == 2 and len(bm.cached) == 2
    # A decode step appends a token; the block it fills registers on the next commit.
    s.token_ids.append(11)
    bm.allocate(s, 1)
    s.num_computed = 12
    bm.commit(s)
    assert len(s.block_hashes) == 3 and len(bm.cached) == 3
    assert len(bm.match_prefix(seq(list(range(13)), "x"))) == 3


def test_hit_rate_statistics():
    bm = BlockManager(8, BS)
    prefix = list(range(8))
    compute(bm, seq(prefix + [50, 51], "a"))  # 10 queried, 0 hit
    compute(bm, seq(prefix + [60, 61], "b"))  # 10 queried, 8 hit
    stats = bm.stats()
    assert stats["prefix_cache_query_tokens"] == 20
    assert stats["prefix_cache_hit_tokens"] == 8
    assert stats["prefix_cache_hit_rate"] == 0.4
    assert stats["prefix_caching"] is True
    assert stats["block_size"] == BS and stats["capacity_tokens"] == 8 * BS
    assert stats["blocks_total"] == 8
    assert stats["blocks_used"] + stats["blocks_free"] == 8
    assert stats["blocks_used"] == 4  # two shared, one each of their own


def test_hit_rate_is_zero_before_any_query():
    stats = BlockManager(4, BS).stats()
    assert stats["prefix_cache_hit_rate"] == 0.0
    assert stats["prefix_cache_hit_tokens"] == stats["prefix_cache_query_tokens"] == 0


def test_prefix_caching_off_never_hits():
    bm = BlockManager(8, BS, prefix_caching=False)
    tokens = list(range(13))
    a = seq(tokens, "a")
    compute(bm, a)
    assert bm.cached == {} and a.block_hashes == []
    assert bm.match_prefix(seq(tokens, "b")) == []
    bm.release(a)
    b = seq(tokens, "c")
    compute(bm, b)
    assert bm.hit_tokens == 0 and len(b.block_table) == 4
    stats = bm.stats()
    assert stats["prefix_caching"] is False
    assert stats["prefix_cache_hit_tokens"] == 0
    assert stats["prefix_cache_query_tokens"] == 26
    assert stats["prefix_cache_hit_rate"] == 0.0
