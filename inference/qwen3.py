"""The Qwen3 forward pass over the paged KV cache, written over the modules transformers loaded.

The loaded model's own modules do the work (embedding, RMSNorms, rotary embedding, the bitsandbytes
4-bit linears, the MLP or MoE block, the LM head); only attention is ours, reading and writing the
paged cache. A step's tokens from every sequence are flattened into one row, so every linear runs
once per step over the whole batch.
"""

from __future__ import annotations

import torch

from .attention import AttentionMetadata, paged_attention, write_kv


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class PagedQwen3:
    def __init__(self, model):
        self.model = model
        inner = model.model
        self.embed = inner.embed_tokens
        self.layers = list(inner.layers)
        self.norm = inner.norm
        self.rotary = inner.rotary_emb
        self.lm_head = model.lm_head
        config = model.config
        self.num_layers = len(self.layers)
        self.num_heads = int(config.num_attention_heads)
        self.num_kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", None)
                            or config.hidden_size // config.num_attention_heads)
        for layer in self.layers:
            if getattr(layer.self_attn, "sliding_window", None):
                raise ValueError("sliding-window attention layers are not supported")

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                kv_cache: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Final hidden states (T, hidden) of the step's tokens (T,) at `positions` (T,)."""
        x = self.embed(input_ids)
        cos, sin = self.rotary(x, positions.unsqueeze(0))
        cos, sin = cos[0].unsqueeze(1), sin[0].unsqueeze(1)  # (T, 1, head_dim)
        tokens = input_ids.shape[0]
        for layer, (k_cache, v_cache) in zip(self.layers, kv_cache, strict=True):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_norm(attn.q_proj(h).view(tokens, -1, self.head_dim))
            k = attn.k_norm(attn.k_proj(h).view(tokens, -1, self.head_dim))
            v = attn.v_proj(h).view(tokens, -1, self.head_dim)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            write_kv(k_cache, v_cache, k, v, meta.slot_mapping)
            o = paged_attention(q, k_cache, v_cache, meta, attn.scaling)
            x = x + attn.o_proj(o.reshape(tokens, -1))
            mlp = layer.mlp(layer.post_attention_layernorm(x).unsqueeze(0))
            x = x + (mlp[0] if isinstance(mlp, tuple) else mlp)[0]
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()
