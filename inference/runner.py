"""The model step: owns the paged KV pool and runs one forward pass over a scheduled batch.

The scheduler decides which sequences compute how many of their tokens this step (a decode is one,
a prefill chunk several); the runner turns that into flat tensors (token ids, positions, slots and
the attention metadata, each built on the host and moved in one transfer), runs the model, and
samples the next token of every sequence whose last token was computed. Kept apart from the
scheduler so that a faster step (CUDA graphs, other kernels) can replace it behind `execute`.
"""

from __future__ import annotations

import logging

import torch

from .attention import AttentionMetadata, DecodeGroup, PrefillChunk, group_by_length
from .config import EngineSettings
from .loader import LoadedModel
from .qwen3 import PagedQwen3
from .sampling import SampledBatch, Sampler
from .sequence import Sequence

logger = logging.getLogger(__name__)

GIB = 1024**3


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
            # profile (bench/results/profile-step-h200.json). The other fused kernels do not.
            torch.backends.cuda.enable_cudnn_sdp(False)
        self.block_size = settings.block_size
        self.max_batched_tokens = settings.max_num_batched_tokens or default_batched_tokens(self.device)
        self.max_seqs = settings.max_active_requests
        vocab_size = int(loaded.model.config.vocab_size)
        self._token_text: dict[int, str] = {}
        self.sampler = Sampler(vocab_size, len(self.tokenizer), self.device, self.token_text)
        self.num_blocks = self._pool_blocks(settings, max_context, vocab_size)
        shape = (self.num_blocks * self.block_size, self.model.num_kv_heads, self.model.head_dim)
        self.kv_cache = [
            (torch.zeros(shape, dtype=self.dtype, device=self.device),
             torch.zeros(shape, dtype=self.dtype, device=self.device))
            for _ in range(self.model.num_layers)
        ]
        logger.info("KV cache: %d blocks of %d tokens (%d tokens, %.2f GiB)", self.num_blocks,
                    self.block_size, self.capacity_tokens, self.kv_cache_bytes / GIB)

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
            # A chunk attending to the whole window: gathered and head-expanded keys and values.
            long_context = 3 * max_context * m.num_heads * m.head_dim * self.dtype.itemsize
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
    def execute(self, scheduled: list[tuple[Sequence, int]]) -> tuple[list[Sequence], SampledBatch]:
        """Compute `n` more tokens of each (sequence, n); sample for those now complete."""
        input_ids, positions, slot_mapping, sample_index, to_sample = [], [], [], [], []
        decode_rows, decode_lengths, decode_tables, prefill = [], [], [], []
        bs = self.block_size
        for seq, n in scheduled:
            start, table = seq.num_computed, seq.block_table
            row = len(input_ids)
            input_ids.extend(seq.token_ids[start:start + n])
            positions.extend(range(start, start + n))
            slot_mapping.extend(table[p // bs] * bs + p % bs for p in range(start, start + n))
            context = start + n
            if n == 1:
                decode_rows.append(row)
                decode_lengths.append(context)
                decode_tables.append(table[: -(-context // bs)])
            else:
                prefill.append((row, n, table[: -(-context // bs)], context))
            if context == len(seq.token_ids):
                sample_index.append(row + n - 1)
                to_sample.append(seq)
        device = self.device
        meta = AttentionMetadata(torch.tensor(slot_mapping, device=device))
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
        hidden = self.model.forward(torch.tensor(input_ids, device=device),
                                    torch.tensor(positions, device=device), meta, self.kv_cache)
        if not to_sample:
            return [], SampledBatch([], {}, {})
        for seq in to_sample:
            self.sampler.prepare(seq)
        logits = self.model.logits(hidden[torch.tensor(sample_index, device=device)])
        return to_sample, self.sampler(logits, to_sample)

    def release_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
