"""The Qwen3 forward pass on the GPU through the Triton kernels (inference/kernels), over the same
loaded modules as `PagedQwen3`: same weights, same paged KV pool, the same numbers up to rounding.

Per layer: one fused RMSNorm (with the residual add), one NF4 product for Q, K and V together, one
kernel for the Q/K norms, the rotary embedding and the cache write, paged attention, the output
product, a second fused norm, one NF4 product for gate and up together, SiLU·mul, and the down
product. Every input it reads is a device tensor, so a decode step can be captured in a CUDA graph
(inference/cuda_graphs.py) and replayed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .kernels.fused import add_rms_norm, qk_norm_rope_store, silu_mul
from .kernels.nf4 import NF4Linear
from .kernels.paged_attention import AttentionTiles, paged_attention
from .qwen3 import PagedQwen3


@dataclass
class FastLayer:
    qkv: NF4Linear
    o: NF4Linear
    gate_up: NF4Linear
    down: NF4Linear
    input_norm: torch.Tensor
    post_norm: torch.Tensor
    q_norm: torch.Tensor
    k_norm: torch.Tensor
    eps: float
    qk_eps: float
    scale: float


def unsupported_reason(paged: PagedQwen3) -> str | None:
    """Why this model cannot take the fast path (then the eager one runs), or None."""
    rotary = paged.rotary
    if getattr(rotary, "rope_type", "default") != "default":
        return f"rotary embedding type {rotary.rope_type!r}"
    if paged.head_dim % 16 or paged.head_dim & (paged.head_dim - 1):
        return f"head size {paged.head_dim}"
    for layer in paged.layers:
        mlp = layer.mlp
        if not all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj")):
            return "a mixture-of-experts MLP"
        for module in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                       layer.self_attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            state = getattr(module.weight, "quant_state", None)
            if state is None or state.quant_type != "nf4":
                return "weights that are not bitsandbytes NF4"
            if module.bias is not None:
                return "linear layers with a bias"
    return None


class FastQwen3:
    def __init__(self, paged: PagedQwen3):
        self.paged = paged
        self.embed = paged.embed
        self.lm_head = paged.lm_head
        self.final_norm = paged.norm.weight
        self.final_eps = float(paged.norm.variance_epsilon)
        self.heads, self.kv_heads, self.head_dim = paged.num_heads, paged.num_kv_heads, paged.head_dim
        self.inv_freq = paged.rotary.inv_freq.float().contiguous()
        self.rope_scale = float(getattr(paged.rotary, "attention_scaling", 1.0))
        self.layers = []
        for layer in paged.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append(FastLayer(
                qkv=NF4Linear.fused([attn.q_proj, attn.k_proj, attn.v_proj]),
                o=NF4Linear(attn.o_proj),
                gate_up=NF4Linear.fused([mlp.gate_proj, mlp.up_proj]),
                down=NF4Linear(mlp.down_proj),
                input_norm=layer.input_layernorm.weight,
                post_norm=layer.post_attention_layernorm.weight,
                q_norm=attn.q_norm.weight, k_norm=attn.k_norm.weight,
                eps=float(layer.input_layernorm.variance_epsilon),
                qk_eps=float(attn.q_norm.variance_epsilon), scale=float(attn.scaling)))
        self.intermediate = self.layers[0].down.in_features

    def linears(self) -> list[NF4Linear]:
        return [linear for layer in self.layers
                for linear in (layer.qkv, layer.o, layer.gate_up, layer.down)]

    @property
    def extra_bytes(self) -> int:
        """Memory the fast path holds beyond the loaded model (the fused linears' scales)."""
        return sum(layer.qkv.extra_bytes + layer.gate_up.extra_bytes for layer in self.layers)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                launches: list[tuple[AttentionTiles, int]], kv_cache: list[tuple[torch.Tensor,
                                                                                   torch.Tensor]],
                block_size: int) -> torch.Tensor:
        """Final hidden states (T, hidden) of the step's tokens. `launches` are the attention
        launches of the step (tiles, number of tiles): decode tiles first, then prompt chunks,
        since a split decode launch merges over every row (see kernels.paged_attention)."""
        x = self.embed(input_ids)
        residual = None
        q_size = self.heads * self.head_dim
        kv_size = self.kv_heads * self.head_dim
        for layer, (k_cache, v_cache) in zip(self.layers, kv_cache, strict=True):
            h, residual = add_rms_norm(x, residual, layer.input_norm, layer.eps)
            qkv = layer.qkv(h)
            q = qk_norm_rope_store(
                qkv[:, :q_size], qkv[:, q_size:q_size + kv_size], qkv[:, q_size + kv_size:],
                layer.q_norm, layer.k_norm, layer.qk_eps, self.inv_freq, self.rope_scale,
                positions, slots, k_cache, v_cache, self.heads, self.head_dim)
            o = torch.empty_like(q)
            for tiles, num_tiles in launches:
                paged_attention(q, k_cache, v_cache, tiles, num_tiles, block_size, layer.scale,
                                out=o)
            x = layer.o(o.view(o.shape[0], -1))
            h, residual = add_rms_norm(x, residual, layer.post_norm, layer.eps)
            gate_up = layer.gate_up(h)
            x = layer.down(silu_mul(gate_up[:, :self.intermediate], gate_up[:, self.intermediate:]))
        h, _ = add_rms_norm(x, residual, self.final_norm, self.final_eps)
        return h

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()
