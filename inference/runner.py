"""The model step: owns the paged KV pool and runs one forward pass over a scheduled batch.

The scheduler decides which sequences compute how many of their tokens this step (a decode is one,
a prefill chunk several); the runner turns that into flat tensors (token ids, positions, slots and
the attention metadata, each built on the host and moved in one transfer), runs the model, and
samples the next token of every sequence whose last token was computed. Kept apart from the
scheduler so that a faster step (CUDA graphs, other kernels) can replace it behind `execute`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from .attention import AttentionMetadata, DecodeGroup, PrefillChunk, group_by_length
from .config import EngineSettings
from .loader import LoadedModel
from .qwen3 import PagedQwen3
from .sampling import PendingSample, SampledBatch, Sampler
from .sequence import Sequence
from .step_inputs import device_tensor, flatten_step

logger = logging.getLogger(__name__)

GIB = 1024**3
PROMPT_GRAPH_TOLERANCE = 1e-3  # relative, against the eager step padded alike; a broken one: ~1


def default_batched_tokens(device: torch.device) -> int:
    return 2048 if device.type == "cuda" else 512


class ModelRunner:
    def __init__(self, loaded: LoadedModel, settings: EngineSettings, max_context: int):
        self.loaded = loaded
        self.model = PagedQwen3(loaded.model)
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.dtype = self.model.dtype
        if self.device.type == "cuda":
            # cuDNN's attention re-plans for every new key length: 1.6 ms of CPU per call in the
            # profile (bench/results/profile-step-pytorch-h200.json). The other fused kernels do not.
            torch.backends.cuda.enable_cudnn_sdp(False)
        self.fast_model = self._fast_model(settings)
        self.fast_step = None
        self.block_size = settings.block_size
        self.max_batched_tokens = settings.max_num_batched_tokens or default_batched_tokens(self.device)
        self.max_seqs = settings.max_active_requests
        self.async_scheduling = (settings.async_scheduling if settings.async_scheduling is not None
                                 else self.device.type == "cuda")
        vocab_size = int(loaded.model.config.vocab_size)
        self._token_text: dict[int, str] = {}
        self.sampler = Sampler(vocab_size, len(self.tokenizer), self.device, self.token_text)
        self.num_blocks = self._pool_blocks(settings, max_context, vocab_size)
        # The fast step keeps one more block, owned by no sequence, for a CUDA graph's padding rows.
        pool_blocks = self.num_blocks + (self.fast_model is not None)
        shape = (pool_blocks * self.block_size, self.model.num_kv_heads, self.model.head_dim)
        self.kv_cache = [
            (torch.zeros(shape, dtype=self.dtype, device=self.device),
             torch.zeros(shape, dtype=self.dtype, device=self.device))
            for _ in range(self.model.num_layers)
        ]
        logger.info("KV cache: %d blocks of %d tokens (%d tokens, %.2f GiB)", self.num_blocks,
                    self.block_size, self.capacity_tokens, self.kv_cache_bytes / GIB)
        self.graph_pool_bytes = 0
        self.graph_buckets: list[int] = []
        self.prompt_graph_tokens: list[int] = []  # prompt chunk sizes replayed from graphs
        self.capture_seconds = 0.0
        self.kernel_report: dict[str, dict] = {}
        if self.fast_model is not None:
            try:
                self._start_fast_step(settings.cuda_graphs, max_context)
            except Exception as exc:  # a GPU or Triton build the kernels do not run on
                logger.warning("The Triton step failed to start (%s: %s); serving with the plain "
                               "PyTorch step", type(exc).__name__, exc, exc_info=True)
                self.fast_model = self.fast_step = None
                self.graph_buckets, self.graph_pool_bytes, self.kernel_report = [], 0, {}
                self.prompt_graph_tokens = []
            if self.fast_model is None:  # out of the handler: its traceback no longer holds graphs
                self.release_memory()
        if self.fast_model is not None:
            self.sampler.use_kernels()

    # -- the step's implementation -------------------------------------------------------------
    def _fast_model(self, settings: EngineSettings):
        """The Triton forward when the device and the model allow it, else None (eager PyTorch)."""
        from .kernels import unavailable_reason

        reason = ("--enforce-eager" if settings.enforce_eager
                  else unavailable_reason(self.device))
        if reason is None:
            from .fast_qwen3 import unsupported_reason

            reason = unsupported_reason(self.model)
        if reason is not None:
            if self.device.type == "cuda":
                logger.info("Plain PyTorch step (no Triton kernels or CUDA graphs): %s", reason)
            return None
        from .fast_qwen3 import FastQwen3

        try:
            return FastQwen3(self.model)
        except ValueError as exc:  # a layer shape the kernels do not tile
            logger.info("Plain PyTorch step (no Triton kernels or CUDA graphs): %s", exc)
            return None

    def _start_fast_step(self, cuda_graphs: bool, max_context: int) -> None:
        from .kernels.nf4_choice import choose_kernels

        linears = self.fast_model.linears()
        if cuda_graphs:  # measured in CUDA graphs, so it holds for what decode steps replay
            try:
                self.kernel_report = choose_kernels(linears, self.dtype, self.device,
                                                    self.max_seqs)
            except Exception as exc:  # the measurement itself failed: bitsandbytes everywhere
                logger.warning("Could not measure the NF4 products (%s); using bitsandbytes'",
                               exc, exc_info=True)
                for linear in linears:
                    linear.use_bitsandbytes()
        try:
            self._capture_and_warm_up(cuda_graphs, max_context)
            return
        except Exception as exc:
            if not any(config is not None for linear in linears
                       for config in (*linear.triton.values(), linear.above)):
                raise
            logger.warning("The Triton step failed to start with Triton NF4 products (%s: %s); "
                           "trying again with bitsandbytes' products", type(exc).__name__, exc,
                           exc_info=True)
        # Out of the handler: the failed attempt's graphs, held by its traceback, are freed first.
        for linear in linears:
            linear.use_bitsandbytes()
        self.kernel_report = {
            name: {rows: {**entry, "kernel": "bitsandbytes"} for rows, entry in by_rows.items()}
            for name, by_rows in self.kernel_report.items()}
        self.fast_step, self.graph_buckets, self.graph_pool_bytes = None, [], 0
        self.prompt_graph_tokens, self.capture_seconds = [], 0.0
        self.release_memory()
        self._capture_and_warm_up(cuda_graphs, max_context)

    def _capture_and_warm_up(self, cuda_graphs: bool, max_context: int) -> None:
        from .cuda_graphs import DecodeGraphs
        from .fast_step import FastStep

        graphs = None
        if cuda_graphs:
            before = torch.cuda.memory_allocated(self.device)
            graphs = DecodeGraphs(self.fast_model, self.kv_cache, self.block_size, self.max_seqs,
                                  -(-max_context // self.block_size), self.num_blocks, self.device)
            graphs.capture()
            self.graph_pool_bytes = torch.cuda.memory_allocated(self.device) - before
            self.graph_buckets = sorted(graphs.graphs)
            self.capture_seconds = graphs.capture_seconds
        self.fast_step = FastStep(self.fast_model, self.kv_cache, self.block_size, self.device,
                                  graphs, self.num_blocks)
        self.fast_step.warm_up(self.max_seqs)
        if graphs is not None:
            self._capture_prompt_graphs(graphs.pool, max_context)

    def _capture_prompt_graphs(self, pool, max_context: int) -> None:
        """Graphs of a lone prompt chunk (prompt_graphs.py), kept only if a replay agrees with
        the eager step; without them, prompt chunks run eagerly as before."""
        from .prompt_graphs import CHECK_TOKENS, PromptGraphs

        before = torch.cuda.memory_allocated(self.device)
        prompts, why = None, None
        try:
            prompts = PromptGraphs(self.fast_model, self.kv_cache, self.block_size,
                                   -(-max_context // self.block_size), self.num_blocks,
                                   self.device, pool)
            prompts.capture()
            # The first blocks hold nothing yet: no request has been admitted.
            needed = -(-CHECK_TOKENS // self.block_size)
            if self.num_blocks < needed:
                raise ValueError(f"the KV cache has fewer than {needed} blocks to check them in")
            with torch.no_grad():
                difference = prompts.check(self.fast_step.eager_prompt, list(range(needed)))
            if difference > PROMPT_GRAPH_TOLERANCE:
                why = f"a replay differs from the eager step by {difference:.3g} (relative)"
        except Exception as exc:  # the decode graphs and the eager step still serve
            why = f"{type(exc).__name__}: {exc}"
            logger.debug("Prompt graph capture failed", exc_info=True)
        if why is not None:
            logger.warning("Prompt chunks run eagerly, without CUDA graphs: %s", why)
            prompts = None
            self.release_memory()
            return
        self.fast_step.prompt_graphs = prompts
        self.prompt_graph_tokens = sorted(prompts.graphs)
        self.graph_pool_bytes += torch.cuda.memory_allocated(self.device) - before
        self.capture_seconds += prompts.capture_seconds

    def describe(self) -> dict:
        """How steps run and what they hold in memory (model info's `step`)."""
        fast = self.fast_model is not None
        return {
            "kernels": "triton" if fast else "pytorch",
            "async_scheduling": self.async_scheduling,
            "sampling": "triton" if self.sampler.kernels is not None else "pytorch",
            "cuda_graphs": bool(self.graph_buckets),
            "graph_batch_sizes": self.graph_buckets,
            "prompt_graph_tokens": self.prompt_graph_tokens,
            "graph_capture_seconds": round(self.capture_seconds, 2),
            "nf4_products": self.kernel_report,
            "memory_bytes": {
                "weights": self.weight_bytes,
                "kv_cache": self.kv_cache_bytes,
                "graph_pool": self.graph_pool_bytes,
            },
        }

    @property
    def weight_bytes(self) -> int:
        """The loaded model's parameters and buffers, plus what the fast path adds."""
        model = self.loaded.model
        tensors = list(model.parameters()) + list(model.buffers())
        seen, total = set(), 0
        for t in tensors:
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
        for module in model.modules():  # bitsandbytes keeps the 4-bit scales off the parameters
            state = getattr(getattr(module, "weight", None), "quant_state", None)
            if state is not None:
                total += state.absmax.numel() * state.absmax.element_size()
                if state.nested:
                    total += state.state2.absmax.numel() * state.state2.absmax.element_size()
        return total + (self.fast_model.extra_bytes if self.fast_model is not None else 0)

    # -- sizing -------------------------------------------------------------------------------
    @property
    def bytes_per_token(self) -> int:
        m = self.model
        return 2 * m.num_layers * m.num_kv_heads * m.head_dim * self.dtype.itemsize

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def kv_cache_bytes(self) -> int:
        return self.capacity_tokens * self.bytes_per_token

    def _pool_blocks(self, settings: EngineSettings, max_context: int, vocab_size: int) -> int:
        """Blocks in the pool: `kv_cache_tokens` if set; on a GPU, what fits in
        `gpu_memory_utilization` of its memory after the weights and a reserve for one step's
        activations; on a CPU, a quarter of the free memory, at most the context window."""
        if settings.kv_cache_tokens:
            tokens = settings.kv_cache_tokens
        elif self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            m, config = self.model, self.loaded.model.config
            step = self.max_batched_tokens * 8 * (
                2 * config.hidden_size + 3 * config.intermediate_size
                + (m.num_heads + 2 * m.num_kv_heads) * m.head_dim)
            logits = 4 * self.max_seqs * vocab_size * 4
            # A chunk attending to the whole window: gathered and head-expanded keys and values
            # (the Triton attention reads the pool in place instead).
            long_context = 0 if self.fast_model is not None else (
                3 * max_context * m.num_heads * m.head_dim * self.dtype.itemsize)
            reserve = step + logits + long_context + GIB
            budget = total * settings.gpu_memory_utilization - (total - free) - reserve
            tokens = int(budget // self.bytes_per_token)
        else:
            try:
                import psutil

                available = psutil.virtual_memory().available
            except ImportError:
                available = 8 * GIB
            tokens = min(max_context, int(available * 0.25 // self.bytes_per_token))
        smallest = -(-self.max_batched_tokens // self.block_size) + 1
        if tokens // self.block_size < smallest:
            logger.warning("The KV cache would hold %d tokens; using the minimum of %d", tokens,
                           smallest * self.block_size)
        return max(tokens // self.block_size, smallest)

    def token_text(self, token_id: int) -> str:
        text = self._token_text.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._token_text[token_id] = text
        return text

    # -- one step -----------------------------------------------------------------------------
    def launch(self, scheduled: list[tuple[Sequence, int]], carried: torch.Tensor | None = None,
               while_waiting: Callable[[], None] | None = None,
               ) -> tuple[list[Sequence], PendingSample | None]:
        """Queue the computation of `n` more tokens of each (sequence, n) and the sampling of
        those now complete; `collect` reads the sampled ids back. `carried` holds, on the device,
        the input ids of the step's first rows when the step before sampled them and they are not
        read back yet (async scheduling). `while_waiting` runs once the forward pass is queued on
        the GPU, while the device works: host work that then does not delay the step. A CPU
        computes as it is asked, so there it runs first, not a whole step later."""
        if while_waiting is not None and self.device.type != "cuda":
            while_waiting()
            while_waiting = None
        if self.fast_step is not None:
            to_sample, logits = self.fast_step.run(scheduled, carried)
        else:
            to_sample, logits = self._eager(scheduled, carried)
        if while_waiting is not None:
            while_waiting()
        if not to_sample:
            return [], None
        for seq in to_sample:
            self.sampler.prepare(seq)
        return to_sample, self.sampler.launch(logits, to_sample)

    def collect(self, pending: PendingSample | None) -> SampledBatch:
        """The ids a launched step sampled (waiting for the device), with logprobs and failures."""
        return self.sampler.collect(pending) if pending is not None else SampledBatch([], {}, {})

    def execute(self, scheduled: list[tuple[Sequence, int]],
                while_waiting: Callable[[], None] | None = None,
                ) -> tuple[list[Sequence], SampledBatch]:
        """`launch` and `collect` in one: compute, sample and read the ids back."""
        to_sample, pending = self.launch(scheduled, None, while_waiting)
        return to_sample, self.collect(pending)

    def carry(self, pending: PendingSample, rows: list[int]) -> torch.Tensor:
        """The ids `pending` sampled for its `rows`, on the device: the next step's inputs. A
        failed row's code becomes id 0 (the row's sequence has ended; its token is dropped)."""
        chosen = pending.chosen
        if rows != list(range(len(pending.seqs))):
            chosen = chosen[device_tensor(rows, self.device)]
        return chosen.clamp(min=0)

    def _eager(self, scheduled: list[tuple[Sequence, int]], carried: torch.Tensor | None = None,
               ) -> tuple[list[Sequence], torch.Tensor]:
        """The plain PyTorch step: the loaded modules and SDPA over the paged cache."""
        bs = self.block_size
        step = flatten_step(scheduled, bs)
        decode_rows, decode_lengths, decode_tables, prefill = [], [], [], []
        for row, n, context, table in zip(step.starts, step.q_len, step.context, step.tables,
                                          strict=True):
            if n == 1:
                decode_rows.append(row)
                decode_lengths.append(context)
                decode_tables.append(table)
            else:
                prefill.append((row, n, table, context))
        device = self.device
        meta = AttentionMetadata(torch.tensor(step.slots, device=device))
        offsets = torch.arange(bs, device=device)
        for group in group_by_length(decode_lengths):
            lengths = [decode_lengths[i] for i in group]
            width = max(len(decode_tables[i]) for i in group)
            tables = torch.tensor([decode_tables[i] + [0] * (width - len(decode_tables[i]))
                                   for i in group], device=device)
            slots = (tables.unsqueeze(-1) * bs + offsets).flatten(1)[:, :max(lengths)]
            mask = torch.arange(slots.shape[1], device=device) < torch.tensor(
                lengths, device=device).unsqueeze(1)
            rows = torch.tensor([decode_rows[i] for i in group], device=device)
            meta.decode.append(DecodeGroup(rows, slots, mask[:, None, None, :]))
        for row, n, table, context in prefill:
            blocks = torch.tensor(table, device=device)
            slots = (blocks.unsqueeze(-1) * bs + offsets).flatten()[:context]
            meta.prefill.append(PrefillChunk(row, n, slots))
        ids = device_tensor(step.ids, device)
        if carried is not None:
            ids[:len(carried)] = carried
        hidden = self.model.forward(ids,
                                    torch.tensor(step.positions, device=device), meta, self.kv_cache)
        if not step.to_sample:
            return [], hidden[:0]
        rows = device_tensor(step.sample_rows, device)
        return step.to_sample, self.model.logits(hidden[rows])

    def release_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
