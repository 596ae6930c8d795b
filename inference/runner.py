"""The model step, separate from request bookkeeping: prefill a prompt or decode one token for one
sequence, with that sequence's own KV cache, and sample the next token.

Kept apart from the scheduler so that a batching runner can replace it behind the same calls.
"""

from __future__ import annotations

import inspect
import logging

import torch

from .loader import LoadedModel
from .sampling import Sampler
from .sequence import Sequence

logger = logging.getLogger(__name__)


class ModelRunner:
    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.vocab_size = int(self.model.config.vocab_size)
        self.tokenizer_vocab = len(self.tokenizer)
        self._token_text: dict[int, str] = {}
        # transformers 5.2x renamed `past_key_values` to `cache`; older 5.x only knows the former.
        self._cache_kw = (
            "cache" if "cache" in inspect.signature(self.model.forward).parameters
            else "past_key_values"
        )

    def token_text(self, token_id: int) -> str:
        text = self._token_text.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._token_text[token_id] = text
        return text

    def _forward(self, input_ids: list[int], cache) -> tuple[torch.Tensor, object]:
        ids = torch.tensor([input_ids], dtype=torch.long, device=self.device)
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._cache_kw: cache})
        new_cache = out.cache if self._cache_kw == "cache" else out.past_key_values
        return out.logits[0, -1], new_cache

    def prefill(self, seq: Sequence) -> None:
        """Run the prompt through the model and sample the first token."""
        seq.sampler = Sampler(seq.params, self.vocab_size, self.device, seq.prompt_ids,
                              valid_vocab=self.tokenizer_vocab, matcher=seq.matcher)
        logits, seq.cache = self._forward(seq.prompt_ids, None)
        self._sample(seq, logits)

    def decode(self, seq: Sequence) -> None:
        """Feed the last sampled token and sample the next one."""
        logits, seq.cache = self._forward([seq.next_input], seq.cache)
        self._sample(seq, logits)

    def _sample(self, seq: Sequence, logits: torch.Tensor) -> None:
        assert seq.sampler is not None
        sampled = seq.sampler(logits, seq.output_ids, self.token_text)
        seq.append(sampled.token_id, sampled.logprob)

    def release_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
