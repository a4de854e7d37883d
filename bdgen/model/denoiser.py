"""The denoiser transformer ``BDDenoiser`` (spec §2), reference version: one forward.

Node and edge slots have separate embedding tables and output heads; a composite learned
positional encoding tells node slots from edge slots and which rooms an edge joins; time
enters through adaLN-Zero modulation (DiT), so every block is the identity at initialisation
and all logits start at 0. PAD keys are masked out of attention, and the MASK/PAD logits are
forced to -inf ("SUBS"), so the model never predicts them.

The pipeline runs :class:`bdgen.model.fast_forward.FastDenoiser`: the same module tree and
weights with faster block paths (PAD rows skipped, a shared time folded into the weights,
a faster CPU dropout), checked against this one in tests/test_fast_forward.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bdgen.data.vocab import (
    EDGE_MASK,
    EDGE_PAD,
    EDGE_VOCAB_SIZE,
    NODE_MASK,
    NODE_PAD,
    NODE_VOCAB_SIZE,
    VocabConfig,
)
from bdgen.errors import BdgenError


@dataclass(frozen=True)
class ModelConfig:
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    cond_dim: int = 128
    mlp_ratio: int = 4
    dropout: float = 0.1
    frequency_embedding_size: int = 256

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise BdgenError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.cond_dim != self.d_model:
            raise BdgenError(f"cond_dim {self.cond_dim} must equal d_model {self.d_model} "
                             "(the time embedding has d_model features, spec §2.2)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        try:
            return cls(**data)
        except TypeError as exc:
            raise BdgenError(f"bad model config {data}: {exc}") from None


MODEL_PRESETS: dict[str, ModelConfig] = {
    "small": ModelConfig(128, 4, 4, 128, 4, 0.1, 256),
    "base": ModelConfig(256, 6, 8, 256, 4, 0.1, 256),
    # For tests and smoke runs only.
    "tiny": ModelConfig(32, 2, 2, 32, 4, 0.0, 32),
}


def model_preset(name: str) -> ModelConfig:
    if name not in MODEL_PRESETS:
        raise BdgenError(f"unknown model preset {name!r}; valid: {', '.join(MODEL_PRESETS)}")
    return MODEL_PRESETS[name]


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoid features ``[cos(t f_k), sin(t f_k)]`` (cos first), zero-padded if dim is odd."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _zero(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero modulation by the time embedding (§2.3)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=1e-5)
        self.mlp = nn.Sequential(
            nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(), nn.Linear(cfg.mlp_ratio * d, d)
        )
        self.modulation = _zero(nn.Linear(cfg.cond_dim, 6 * d))

    def attention(self, qkv: Tensor, key_mask: Tensor | None) -> Tensor:
        """``qkv [B, S, 3d]`` -> attention output ``[B, S, d]`` (before the out projection);
        ``key_mask`` None = every key is real."""
        b, s, d3 = qkv.shape
        d = d3 // 3
        q, k, v = qkv.view(b, s, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, dropout_p=self.dropout if self.training else 0.0)
        return attn.transpose(1, 2).reshape(b, s, d)

    def forward(self, x: Tensor, c: Tensor, key_mask: Tensor | None) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[:, None].chunk(6, -1)
        h = modulate(self.norm1(x), shift1, scale1)
        attn = self.attn_out(self.attention(self.qkv(h), key_mask))
        x = x + gate1 * F.dropout(attn, self.dropout, self.training)
        h = modulate(self.norm2(x), shift2, scale2)
        result: Tensor = x + gate2 * F.dropout(self.mlp(h), self.dropout, self.training)
        return result


class BDDenoiser(nn.Module):
    """``forward(tokens, pad_mask, t) -> (node_logits [B,n_max,15], edge_logits [B,n_edges,13])``.

    ``node_embedding``/``edge_embedding`` are public: learned-rate training builds soft
    embeddings from them and passes ``pre_embedded`` instead of tokens.
    """

    def __init__(self, config: ModelConfig, vocab: VocabConfig) -> None:
        super().__init__()
        self.config = config
        self.vocab = vocab
        d = config.d_model
        n = vocab.n_max
        self.node_embedding = nn.Embedding(NODE_VOCAB_SIZE, d)
        self.edge_embedding = nn.Embedding(EDGE_VOCAB_SIZE, d)
        self.entity_type_emb = nn.Embedding(2, d)
        self.node_index_emb = nn.Embedding(n, d)
        self.pair_index_emb = nn.Embedding(n, d)
        pairs = torch.as_tensor(vocab.edge_pairs)
        self.register_buffer("edge_i", pairs[:, 0].clone(), persistent=False)
        self.register_buffer("edge_j", pairs[:, 1].clone(), persistent=False)
        self.register_buffer("node_idx", torch.arange(n), persistent=False)
        entity = torch.cat([torch.zeros(n, dtype=torch.long),
                            torch.ones(vocab.n_edges, dtype=torch.long)])
        self.register_buffer("entity", entity, persistent=False)

        f = config.frequency_embedding_size
        self.time_mlp = nn.Sequential(nn.Linear(f, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(AdaLNBlock(config) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(d, eps=1e-5)
        self.final_modulation = _zero(nn.Linear(config.cond_dim, 2 * d))
        self.node_head = _zero(nn.Linear(d, NODE_VOCAB_SIZE))
        self.edge_head = _zero(nn.Linear(d, EDGE_VOCAB_SIZE))
        # SUBS: additive -inf on the MASK/PAD classes (adding keeps autograd simple).
        node_bias = torch.zeros(NODE_VOCAB_SIZE)
        node_bias[[NODE_MASK, NODE_PAD]] = float("-inf")
        edge_bias = torch.zeros(EDGE_VOCAB_SIZE)
        edge_bias[[EDGE_MASK, EDGE_PAD]] = float("-inf")
        self.register_buffer("node_subs", node_bias, persistent=False)
        self.register_buffer("edge_subs", edge_bias, persistent=False)

    def positional_encoding(self) -> Tensor:
        """``[S, d]``: entity type + node index (nodes) or pair_i + pair_j (edges)."""
        node_pos = self.node_index_emb(self.node_idx)
        edge_pos = self.pair_index_emb(self.edge_i) + self.pair_index_emb(self.edge_j)
        result: Tensor = self.entity_type_emb(self.entity) + torch.cat([node_pos, edge_pos], dim=0)
        return result

    def embed(self, tokens: Tensor) -> Tensor:
        n = self.vocab.n_max
        return torch.cat([self.node_embedding(tokens[:, :n]),
                          self.edge_embedding(tokens[:, n:])], dim=1)

    def time_condition(self, t: Tensor) -> Tensor:
        """``t [B]`` -> the conditioning vector ``c [B, cond_dim]`` of every block."""
        emb = timestep_embedding(t, self.config.frequency_embedding_size)
        return F.silu(self.time_mlp(emb))

    def trunk(self, x: Tensor, t: Tensor, pad_mask: Tensor) -> Tensor:
        """Blocks and final modulated LayerNorm: ``x [B, S, d]``, ``t [B]`` -> ``[B, S, d]``."""
        c = self.time_condition(t)
        key_mask = pad_mask[:, None, None, :]  # True = attend; PAD keys excluded
        for block in self.blocks:
            x = block(x, c, key_mask)
        shift, scale = self.final_modulation(c)[:, None].chunk(2, -1)
        return modulate(self.final_norm(x), shift, scale)

    def forward(self, tokens: Tensor, pad_mask: Tensor, t: Tensor | float,
                condition: object = None, pre_embedded: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        b, s = tokens.shape
        if s != self.vocab.seq_len:
            raise ValueError(f"tokens have length {s}, the model expects {self.vocab.seq_len}")
        x = self.embed(tokens) if pre_embedded is None else pre_embedded
        x = self.trunk(x + self.positional_encoding(), batch_times(t, b, tokens.device),
                       pad_mask)
        return self.heads(x)

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The trunk's output ``[B, S, d]`` -> (node logits, edge logits), SUBS applied."""
        n = self.vocab.n_max
        node_logits = self.node_head(x[:, :n]) + self.node_subs
        edge_logits = self.edge_head(x[:, n:]) + self.edge_subs
        return node_logits, edge_logits


def batch_times(t: Tensor | float, batch: int, device: torch.device) -> Tensor:
    """float32 ``[B]`` times from a number, a 0-d or 1-element tensor (one time for every
    row, expanded: stride 0) or a ``[B]`` tensor."""
    t = torch.as_tensor(t, dtype=torch.float32, device=device)
    if t.dim() == 0 or (t.dim() == 1 and t.numel() == 1):
        return t.reshape(1).expand(batch)
    if t.dim() == 1 and t.numel() == batch:
        return t
    raise ValueError(f"t must be a number, a 0-d, 1-element or length-{batch} 1-d tensor; "
                     f"got shape {tuple(t.shape)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
