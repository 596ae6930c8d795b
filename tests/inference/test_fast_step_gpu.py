"""The GPU step (Triton kernels, CUDA graphs) against references; skipped without CUDA.

- the NF4 linears (bitsandbytes, single and fused) and our NF4 products (the GEMV, the
  tensor-core kernel with its shares of the blocks summed in a fixed order, the dequantization; in
  both lookups) against x @ dequantized(W)ᵀ, with and without double quantization, for row counts
  on both sides of every kernel switch; the start-up choice of kernel per batch bucket
  (kernels/nf4_choice.py);
- paged attention against SDPA over gathered keys, for decode rows and for a prompt chunk behind a
  cached prefix, whole and split in parts, on scattered blocks; a mixed step (decodes, then two
  prompt chunks) with its prompt tiles split against the same step whole;
- one decode step replayed from a CUDA graph against the same step run eagerly, for batch sizes
  between the captured buckets (the graph pads them); likewise a lone prompt chunk, with and
  without a cached prefix;
- the Triton step against the plain PyTorch step (bitsandbytes, SDPA) on the built-in model, in
  bfloat16 and in float16 (what GPUs before compute capability 8.0 run).
"""

from __future__ import annotations

import pytest
import torch

from inference.kernels import unavailable_reason

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or unavailable_reason(torch.device("cuda")) is not None,
    reason="needs a CUDA GPU with Triton")

CUDA = torch.device("cuda")


def nf4_module(n: int, k: int, nested: bool):
    import bitsandbytes as bnb

    m = bnb.nn.Linear4bit(k, n, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4",
                          compress_statistics=nested)
    m.weight = bnb.nn.Params4bit(torch.randn(n, k) * 0.05, requires_grad=False, quant_type="nf4",
                                 compress_statistics=nested)
    return m.to(CUDA)


def dequantized(modules) -> torch.Tensor:
    import bitsandbytes.functional as bf

    return torch.cat([bf.dequantize_4bit(m.weight.data, m.weight.quant_state).float()
                      for m in modules])


@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 17, 64, 600])
def test_nf4_products_match_the_dequantized_weight(rows, nested, dtype):
    from inference.kernels.nf4 import NF4Linear

    torch.manual_seed(rows)
    single = nf4_module(256, 512, nested)
    parts = [nf4_module(n, 512, nested) for n in (128, 64, 64)]
    x = torch.randn(rows, 512, device=CUDA, dtype=dtype)
    for linear, modules in ((NF4Linear(single), [single]), (NF4Linear.fused(parts), parts)):
        expected = x.float() @ dequantized(modules).t()
        for got in (linear(x).float(), linear.matmul(x).float()):  # bitsandbytes, then Triton
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, atol=2e-2 * expected.abs().max().item(),
                                       rtol=0)
    fused = NF4Linear.fused(parts)
    whole = fused.dequantize(torch.float32)  # the table gather, fp32 arithmetic
    torch.testing.assert_close(whole, dequantized(parts), atol=1e-6, rtol=0)
    for linear, modules in ((NF4Linear(single), [single]), (fused, parts)):
        # bfloat16: the register lookup (nf4_asm.dequant_asm), codes rounded to bfloat16 first
        torch.testing.assert_close(linear.dequantize(torch.bfloat16).float(),
                                   dequantized(modules), atol=1e-6, rtol=2 ** -7)


@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("k", [640, 1024])  # 10 blocks a row (a partial last group), 16
def test_the_gemv_takes_blocks_in_groups_with_a_partial_last(nested, k):
    from inference.kernels.nf4 import Config, NF4Linear

    torch.manual_seed(11)
    module = nf4_module(128, k, nested)
    linear = NF4Linear(module)
    weight = dequantized([module])
    assert linear.asm  # the register lookup; "" (below) the gather from the codes, as off NVIDIA
    for asm in (linear.asm, ""):
        linear.asm = asm
        for dtype in (torch.bfloat16, torch.float16, torch.float32):  # the PTX: bfloat16 only
            for rows in (1, 2):
                x = torch.randn(rows, k, device=CUDA, dtype=dtype)
                expected = x.float() @ weight.t()
                # bfloat16 rounds the codes (2⁻⁹) and the output; float32 meets the exact codes
                tolerance = (1e-4 if dtype == torch.float32 else 2e-2) * expected.abs().max().item()
                for block_n, groups, warps in ((4, 8, 2), (4, 16, 4), (2, 4, 1), (8, 2, 1),
                                               (1, 32, 1)):
                    got = linear.matmul(x, Config(block_n, 64 * groups, 0, num_warps=warps))
                    assert got.dtype == dtype
                    torch.testing.assert_close(got.float(), expected, atol=tolerance, rtol=0)


@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_the_tensor_core_kernel_matches_the_dequantized_weight(nested, dtype):
    from inference.kernels.nf4 import Config, NF4Linear, _packs, mma_tiles

    torch.manual_seed(13)
    parts = [nf4_module(n, 640, nested) for n in (64, 32, 32)]  # 10 quantization blocks a row
    single = NF4Linear(parts[0])  # its own scales (8-bit where nested); fused: fp32
    configs = [Config(16, 64, 16, 4, 2), Config(32, 128, 16, 4, 3, split_k=5),
               Config(16, 64, 32, 4, 3, split_k=2), Config(32, 64, 64, 8, 2, split_k=10)]
    # float32 meets the codes at full precision (a gather from the 16), so it is exact but for
    # the order of the sums; bfloat16 weights are rounded as bitsandbytes' bfloat16 ones are
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    for linear, modules in ((single, parts[:1]), (NF4Linear.fused(parts), parts)):
        weight = dequantized(modules)
        assert linear.split_asm  # the register lookup; "" (below) the table gather
        for config in configs:  # bfloat16 takes the PTX with every tiling here
            assert _packs(config.block_n * 32, config.num_warps)
        for asm in (linear.split_asm, ""):
            linear.split_asm = asm
            for rows in (1, 5, 17, 40, 70):
                x = torch.randn(rows, 640, device=CUDA, dtype=dtype)
                expected = x.float() @ weight.t()
                for config in configs:
                    assert mma_tiles(config, linear.out_features, 640, 64)
                    got = linear.matmul(x, config)
                    assert got.dtype == dtype and got.shape == expected.shape
                    assert torch.equal(linear.matmul(x, config), got)  # shares summed in order
                    torch.testing.assert_close(
                        got.float(), expected, atol=tolerance * expected.abs().max().item(), rtol=0)
            assert linear.matmul(x[:0], configs[1]).shape == (0, linear.out_features)
    assert not mma_tiles(Config(16, 128, 16, 4, 2, split_k=2), 128, 640, 64)  # 10 / (2 * 2)


@pytest.mark.parametrize("nested", [True, False])
# 5 groups a row (fewer than some blocks' warps), 20, and 76 (down's: up to 19 a warp)
@pytest.mark.parametrize("k", [640, 2560, 9728])
def test_the_compiled_kernels_match_the_dequantized_weight(nested, k):
    from inference.kernels import nf4_tc_gemm, nf4_tc_gemv
    from inference.kernels.nf4 import NF4Linear, tc_gemm_config, tc_gemv_config
    from inference.kernels.nvrtc import NVRTCError

    torch.manual_seed(17)
    parts = [nf4_module(n, k, nested) for n in (32, 16, 16)]
    # the GEMV up to 4 rows; the other up to 16 (one tile of 8 input rows, two, a part of one);
    # both with K split over 2, 3 (uneven) or 4 blocks, whose last one sums them (called twice
    # below: its count of blocks done must be back at 0)
    kernels = [(rows, tc_gemv_config(warps)) for rows in (1, 2, 3, 4) for warps in (4, 8, 16)]
    kernels += [(rows, tc_gemm_config(warps)) for rows in (1, 3, 8, 9, 15, 16)
                for warps in (4, 8, 16)]
    kernels += [(rows, tc_gemv_config(4, split)) for rows in (1, 3) for split in (2, 3, 4)]
    kernels += [(rows, tc_gemm_config(8, split)) for rows in (5, 16) for split in (2, 3, 4)]
    # its own scales (8-bit where nested), and fused (fp32 scales)
    for linear, modules in ((NF4Linear(parts[0]), parts[:1]), (NF4Linear.fused(parts), parts)):
        weight = dequantized(modules)
        for rows, config in kernels:
            x = torch.randn(rows, k, device=CUDA, dtype=torch.bfloat16)
            expected = x.float() @ weight.t()
            got = linear.matmul(x, config)
            assert got.dtype == torch.bfloat16 and got.shape == expected.shape
            assert torch.equal(linear.matmul(x, config), got)
            # the codes are rounded to bfloat16 (2⁻⁹), as in bitsandbytes' bfloat16 weights
            torch.testing.assert_close(got.float(), expected,
                                       atol=2e-2 * expected.abs().max().item(), rtol=0)
        for module, rows, run in ((nf4_tc_gemv, 5, nf4_tc_gemv.gemv),
                                  (nf4_tc_gemm, 17, nf4_tc_gemm.gemm)):
            x = torch.randn(rows, k, device=CUDA, dtype=torch.bfloat16)
            assert not module.fits(rows, linear.out_features, k, linear.qblock, x.dtype)
            with pytest.raises(NVRTCError, match="does not take"):
                run(linear, x, 4)


def test_split_launches_replay_from_a_graph_like_eager():
    from inference.kernels import nf4_tc_gemv
    from inference.kernels.nf4 import NF4Linear, tc_gemm_config, tc_gemv_config
    from inference.kernels.nvrtc import NVRTCError

    torch.manual_seed(19)
    linear = NF4Linear(nf4_module(64, 1280, True))
    stream = torch.cuda.Stream()
    for rows, config in ((2, tc_gemv_config(4, 4)), (11, tc_gemm_config(8, 2))):
        x = torch.randn(rows, 1280, device=CUDA, dtype=torch.bfloat16)
        eager = linear.matmul(x, config)  # makes the tile counts, outside any capture
        graph = torch.cuda.CUDAGraph()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.cuda.graph(graph):
            out = linear.matmul(x, config)
        torch.cuda.current_stream().wait_stream(stream)
        for _ in range(3):  # each replay finds its counts back at 0
            graph.replay()
            torch.cuda.synchronize()
            assert torch.equal(out, eager)
    device = x.device  # the key launches use (cuda:N)
    saved = nf4_tc_gemv._counts.pop(device)
    try:  # with no counts yet, a capture cannot make them
        with torch.cuda.stream(stream), torch.cuda.graph(torch.cuda.CUDAGraph()):
            with pytest.raises(NVRTCError, match="capture"):
                nf4_tc_gemv.tile_counts(device, 4)
            x.mul(2)  # the capture is not empty
    finally:
        nf4_tc_gemv._counts[device] = saved


def test_each_batch_bucket_takes_the_measured_kernel():
    from inference.kernels.nf4 import DEQUANTIZE, Config, NF4Linear, gemv_config
    from inference.kernels.nf4_choice import MARGIN, choose_kernels

    torch.manual_seed(7)
    singles = [NF4Linear(nf4_module(512, 1024, True)) for _ in range(3)]
    parts = [nf4_module(n, 1024, True) for n in (256, 128, 128)]
    fused = NF4Linear.fused(parts)
    report = choose_kernels(singles + [fused], torch.bfloat16, CUDA, max_rows=20)
    assert set(report) == {"512x1024, 8-bit scales", "512x1024, fp32 scales"}
    for name, by_rows in report.items():
        assert list(by_rows) == [1, 2, 4, 8, 16]  # the buckets up to 20 rows
        for entry in by_rows.values():
            assert entry["bitsandbytes_us"] > 0 and entry["kernel"] in (
                "cuda", "triton", "bitsandbytes")
            assert entry["triton_us"] is not None  # some tiling compiled and matched bitsandbytes
        linear = fused if "fp32" in name else singles[0]
        assert [linear.triton[m] is not None for m in by_rows] == [
            e["kernel"] != "bitsandbytes" for e in by_rows.values()]
        assert [linear.triton[m] is not None and linear.triton[m].compiled
                for m in by_rows] == [e["kernel"] == "cuda" for e in by_rows.values()]
    assert len({tuple(s.triton.items()) for s in singles}) == 1  # one choice per shape
    for name, by_rows in report.items():  # above the largest bucket: DEQUANTIZE if it won there
        largest = by_rows[max(by_rows)]
        won = largest["dequantize_us"] is not None and (
            largest["dequantize_us"] <= MARGIN * largest["bitsandbytes_us"])
        linear = fused if "fp32" in name else singles[0]
        assert linear.above == (DEQUANTIZE if won else None), (name, largest)
    # Forced: one row through the GEMV, 3 through bitsandbytes, 8 on the tensor cores, 16 and
    # 17 (above the largest bucket, where DEQUANTIZE beat bitsandbytes) through DEQUANTIZE; all
    # against the dequantized weight.
    fused.triton = {1: gemv_config(512, 1024, 64), 4: None, 8: Config(64, 64, 16, 4, 3, 8),
                    16: DEQUANTIZE}
    fused.above = DEQUANTIZE
    assert fused.triton_config(3) is None and fused.triton_config(17) == DEQUANTIZE
    assert fused.triton_config(5).tensor_cores
    singles[1].use_bitsandbytes()
    singles[1].triton = {1: gemv_config(512, 1024, 64), 16: DEQUANTIZE}
    assert singles[1].triton_config(17) is None  # DEQUANTIZE did not beat bitsandbytes
    expected_w = dequantized(parts)
    for rows in (1, 3, 5, 16, 17):
        x = torch.randn(rows, 1024, device=CUDA, dtype=torch.bfloat16)
        expected = x.float() @ expected_w.t()
        torch.testing.assert_close(fused(x).float(), expected,
                                   atol=2e-2 * expected.abs().max().item(), rtol=0)


def reference_attention(q, k_cache, v_cache, table, context, q_len, block, scale):
    positions = torch.arange(context, device=CUDA)
    slots = torch.tensor(table, device=CUDA)[positions // block] * block + positions % block
    keys, values = k_cache[slots].float(), v_cache[slots].float()  # (ctx, kv, d)
    group = q.shape[1] // keys.shape[1]
    keys = keys.repeat_interleave(group, dim=1).transpose(0, 1)
    values = values.repeat_interleave(group, dim=1).transpose(0, 1)
    scores = q.float().transpose(0, 1) @ keys.transpose(1, 2) * scale  # (heads, q, ctx)
    query_pos = torch.arange(context - q_len, context, device=CUDA)
    scores = scores.masked_fill(positions[None, None, :] > query_pos[None, :, None], float("-inf"))
    return (scores.softmax(-1) @ values).transpose(0, 1)


@pytest.mark.parametrize("parts", [1, 4])
def test_paged_attention_matches_sdpa(parts):
    from inference.kernels.paged_attention import AttentionTiles, paged_attention, tile_plan

    torch.manual_seed(parts)
    block, heads, kv_heads, dim = 16, 8, 2, 64
    k_cache = torch.randn(64 * block, kv_heads, dim, device=CUDA, dtype=torch.bfloat16)
    v_cache = torch.randn_like(k_cache)
    order = torch.randperm(64).tolist()
    # decode rows of contexts 1, 17, 300; then a 70-token chunk behind 100 cached tokens
    contexts, q_lens = [1, 17, 300, 170], [1, 1, 1, 70]
    tables, used = [], 0
    for ctx in contexts:
        n = -(-ctx // block)
        tables.append(order[used:used + n])
        used += n
    q = torch.randn(sum(q_lens), heads, dim, device=CUDA, dtype=torch.bfloat16)
    width = max(len(t) for t in tables)
    flat = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32,
                        device=CUDA).flatten()
    i32 = dict(dtype=torch.int32, device=CUDA)
    out = torch.empty_like(q)
    for seqs, block_q in (([0, 1, 2], 1), ([3], 32)):  # decode rows, then the chunk (tokens 3-72)
        lens = [q_lens[i] for i in seqs]
        tile_seq, tile_q0 = tile_plan(lens, block_q)
        starts = [sum(q_lens[:i]) for i in seqs]
        tiles = AttentionTiles(
            torch.tensor(tile_seq, **i32), torch.tensor(tile_q0, **i32),
            torch.tensor(starts, **i32), torch.tensor(lens, **i32),
            torch.tensor([contexts[i] for i in seqs], **i32),
            torch.stack([flat.view(len(tables), width)[i] for i in seqs]).flatten().contiguous(),
            torch.tensor([width], **i32), block_q, parts, first_token=starts[0],
            tokens=sum(lens))
        paged_attention(q, k_cache, v_cache, tiles, len(tile_seq), block, 0.125, out=out)
    start = 0
    for table, ctx, n in zip(tables, contexts, q_lens, strict=True):
        expected = reference_attention(q[start:start + n], k_cache, v_cache, table, ctx, n, block,
                                       0.125)
        torch.testing.assert_close(out[start:start + n].float(), expected, atol=3e-2, rtol=3e-2)
        start += n


class Steps:
    """A runner on the built-in model (bf16, on the GPU) and sequences prefilled in it."""

    def __init__(self, builtin_dir, compute_dtype: str = "bfloat16", **settings):
        from inference.block_manager import BlockManager
        from inference.config import EngineSettings
        from inference.loader import load_model
        from inference.runner import ModelRunner

        from ..conftest import CACHE_DIR

        config = EngineSettings(model="builtin", cache_dir=CACHE_DIR, device_map="cuda",
                                compute_dtype=compute_dtype, kv_cache_tokens=8192,
                                max_active_requests=16, **settings)
        self.loaded = load_model(config)
        self.runner = ModelRunner(self.loaded, config, 2048)
        self.blocks = BlockManager(self.runner.num_blocks, self.runner.block_size, False)

    def sequences(self, count: int):
        from inference.detokenizer import IncrementalDetokenizer
        from inference.sequence import Sequence
        from inference.types import SamplingParams

        seqs = []
        for i in range(count):
            g = torch.Generator().manual_seed(i)
            ids = torch.randint(1000, 100_000, (20 + 37 * i,), generator=g).tolist()
            seq = Sequence(str(i), ids, SamplingParams(max_tokens=100, temperature=0), set(),
                           IncrementalDetokenizer(self.loaded.tokenizer), lambda chunk: None)
            self.blocks.allocate(seq, len(ids))
            self.runner.execute([(seq, len(ids))])
            seq.num_computed = len(ids)
            seq.token_ids.append(1234 + i)
            self.blocks.allocate(seq, 1)
            seqs.append(seq)
        return seqs


@pytest.fixture(scope="module")
def graphed(builtin_dir):
    steps = Steps(builtin_dir)
    assert steps.runner.describe()["cuda_graphs"], steps.runner.describe()
    return steps


def assert_same_choice(got: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    """Logits close; the argmax equal wherever the expected top two are not within tolerance."""
    torch.testing.assert_close(got, expected, atol=tolerance, rtol=0)
    top = expected.topk(2, dim=-1).values
    clear = (top[:, 0] - top[:, 1]) > 2 * tolerance
    assert torch.equal(got.argmax(-1)[clear], expected.argmax(-1)[clear])


@pytest.mark.parametrize("batch", [3, 5, 13])
def test_graph_replay_matches_eager_between_buckets(graphed, batch):
    assert batch not in graphed.runner.graph_buckets  # the graph pads this batch
    seqs = graphed.sequences(batch)
    fast = graphed.runner.fast_step
    scheduled = [(s, 1) for s in seqs]
    _, replayed = fast.run(scheduled)
    replayed = replayed.clone()
    graphs, fast.graphs = fast.graphs, None
    try:
        _, eager = fast.run(scheduled)
    finally:
        fast.graphs = graphs
    assert replayed.shape == eager.shape == (batch, replayed.shape[1])
    assert_same_choice(replayed, eager, 1e-2 * eager.abs().max().item())
    for s in seqs:
        graphed.blocks.release(s)


@pytest.mark.parametrize("cached", [0, 37, 1760])  # 1760: a long shared prefix (the window: 2,048)
@pytest.mark.parametrize("tokens", [2, 11, 16, 33, 100, 250])
def test_a_lone_prompt_chunk_replays_from_a_graph_like_eager(graphed, tokens, cached):
    from inference.detokenizer import IncrementalDetokenizer
    from inference.sequence import Sequence
    from inference.types import SamplingParams

    runner, fast = graphed.runner, graphed.runner.fast_step
    assert fast.prompt_graphs is not None, "the start-up check dropped the prompt graphs"
    assert runner.describe()["prompt_graph_tokens"][-1] >= 250
    ids = torch.randint(1000, 100_000, (cached + tokens,),
                        generator=torch.Generator().manual_seed(tokens + cached)).tolist()
    seq = Sequence("p", ids, SamplingParams(max_tokens=4, temperature=0), set(),
                   IncrementalDetokenizer(graphed.loaded.tokenizer), lambda chunk: None)
    graphed.blocks.allocate(seq, len(ids))
    prompts = fast.prompt_graphs
    if cached:  # a prefix already in the cache (written eagerly), as the prefix cache leaves it
        fast.prompt_graphs = None
        try:
            runner.execute([(seq, cached)])
        finally:
            fast.prompt_graphs = prompts
        seq.num_computed = cached
    scheduled = [(seq, tokens)]
    sampled, replayed = fast.run(scheduled)
    replayed = replayed.clone()
    fast.prompt_graphs = None
    try:
        _, eager = fast.run(scheduled)
    finally:
        fast.prompt_graphs = prompts
    assert sampled == [seq] and replayed.shape == eager.shape == (1, eager.shape[1])
    assert_same_choice(replayed, eager, 1e-2 * eager.abs().max().item())
    graphed.blocks.release(seq)


def test_a_mixed_step_with_split_prompt_tiles_matches_it_whole(graphed):
    from inference.detokenizer import IncrementalDetokenizer
    from inference.kernels.paged_attention import prompt_parts
    from inference.sequence import Sequence
    from inference.step_inputs import flatten_step
    from inference.types import SamplingParams

    # the rule: few tiles over a long context split, up to 16 parts of at least 4,096 keys
    assert prompt_parts(1, 8, 132, 262_144) == 16 and prompt_parts(16, 8, 132, 32_768) == 4
    assert prompt_parts(64, 8, 132, 32_768) == 1 and prompt_parts(16, 8, 132, 4_096) == 1
    fast = graphed.runner.fast_step
    decodes = graphed.sequences(2)
    prompts = []
    for n in (40, 70):  # two chunks after the decodes: one launch, merged over both
        ids = torch.randint(1000, 100_000, (n,), generator=torch.Generator().manual_seed(n))
        seq = Sequence(f"p{n}", ids.tolist(), SamplingParams(max_tokens=4, temperature=0), set(),
                       IncrementalDetokenizer(graphed.loaded.tokenizer), lambda chunk: None)
        graphed.blocks.allocate(seq, n)
        prompts.append(seq)
    step = flatten_step([(s, 1) for s in decodes] + [(p, len(p.token_ids)) for p in prompts],
                        fast.block_size)
    hidden = {parts: fast._eager(step.ids, step.positions, step.slots, step.q_len, step.context,
                                 step.tables, 2, parts).float()
              for parts in (1, 4, 16)}
    for parts in (4, 16):
        torch.testing.assert_close(hidden[parts], hidden[1],
                                   atol=2e-2 * hidden[1].abs().max().item(), rtol=0)
    for s in decodes + prompts:
        graphed.blocks.release(s)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])  # float16: what a T4 runs
def test_triton_step_matches_the_pytorch_step(builtin_dir, dtype):
    graphed = Steps(builtin_dir, dtype)
    assert graphed.runner.describe()["cuda_graphs"]
    plain = Steps(builtin_dir, dtype, enforce_eager=True)
    assert plain.runner.describe()["kernels"] == "pytorch"
    for steps in (graphed, plain):
        seqs = steps.sequences(4)
        steps.logits = steps.runner.fast_step.run([(s, 1) for s in seqs])[1].clone() \
            if steps.runner.fast_step else steps.runner._eager([(s, 1) for s in seqs])[1]
        for s in seqs:
            steps.blocks.release(s)
    # Half precision everywhere; the two steps round in different places.
    assert torch.isfinite(graphed.logits).all() and torch.isfinite(plain.logits).all()
    assert_same_choice(graphed.logits, plain.logits, 5e-2 * plain.logits.abs().max().item())
