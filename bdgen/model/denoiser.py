"""The denoiser transformer ``BDDenoiser`` (spec §2).

Node and edge slots have separate embedding tables and output heads; a composite learned
positional encoding tells node slots from edge slots and which rooms an edge joins; time
enters through adaLN-Zero modulation (DiT), so every block is the identity at initialisation
and all logits start at 0. PAD keys are masked out of attention, and the MASK/PAD logits are
forced to -inf ("SUBS"), so the model never predicts them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
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


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


def dropout(x: Tensor, p: float, training: bool, fast: bool = True) -> Tensor:
    """Inverted dropout. On CPU the keep mask comes from 16-bit slices of 64-bit random
    integers (p rounded to a multiple of 2^-16), about twice as fast as ``F.dropout``'s
    per-element Bernoulli draws; elsewhere it is ``F.dropout``."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not fast:
        return F.dropout(x, p, True)
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    bits = words.view(torch.int16)[:n].view(x.shape)
    keep = bits >= round(p * 65536) - 32768
    return torch.where(keep, x * (1.0 / (1.0 - p)), torch.zeros((), dtype=x.dtype))


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
        self.fast_cpu = True  # fast CPU dropout (see :func:`dropout`); False = torch's own

    def _attention(self, qkv: Tensor, key_mask: Tensor) -> Tensor:
        """``qkv [B, S, 3d]`` -> attention output ``[B, S, d]`` (before the out projection)."""
        b, s, d3 = qkv.shape
        d = d3 // 3
        q, k, v = qkv.view(b, s, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if self.training and self.dropout > 0 and qkv.device.type == "cpu" and self.fast_cpu:
            # Written out so the attention-probability dropout uses the fast CPU dropout.
            scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
            scores = scores.masked_fill(~key_mask, float("-inf"))
            attn = dropout(scores.softmax(-1), self.dropout, True) @ v
        else:
            attn = F.scaled_dot_product_attention(
                q, k, v, attn_mask=key_mask, dropout_p=self.dropout if self.training else 0.0)
        return attn.transpose(1, 2).reshape(b, s, d)

    def forward(self, x: Tensor, c: Tensor, key_mask: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[:, None].chunk(6, -1)
        h = _modulate(self.norm1(x), shift1, scale1)
        attn = self.attn_out(self._attention(self.qkv(h), key_mask))
        x = x + gate1 * dropout(attn, self.dropout, self.training, self.fast_cpu)
        h = _modulate(self.norm2(x), shift2, scale2)
        return x + gate2 * dropout(self.mlp(h), self.dropout, self.training, self.fast_cpu)

    def forward_packed(self, xp: Tensor, c: Tensor, key_mask: Tensor, rows: Tensor,
                       sample: Tensor) -> Tensor:
        """The same block on the real positions only: ``xp [N, d]`` holds the rows ``rows``
        of the flattened ``[B*S, d]`` sequence, ``sample`` their batch index."""
        b, s = key_mask.shape[0], key_mask.shape[-1]
        mod = self.modulation(c).index_select(0, sample)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, -1)
        h = _modulate(self.norm1(xp), shift1, scale1)
        qkv = self.qkv(h)
        dense = qkv.new_zeros(b * s, qkv.shape[1]).index_copy(0, rows, qkv)
        attn = self._attention(dense.view(b, s, -1), key_mask)
        attn = self.attn_out(attn.reshape(b * s, -1).index_select(0, rows))
        xp = xp + gate1 * dropout(attn, self.dropout, self.training, self.fast_cpu)
        h = _modulate(self.norm2(xp), shift2, scale2)
        return xp + gate2 * dropout(self.mlp(h), self.dropout, self.training, self.fast_cpu)


class BDDenoiser(nn.Module):
    """``forward(tokens, pad_mask, t) -> (node_logits [B,n_max,15], edge_logits [B,n_edges,13])``.

    ``node_embedding``/``edge_embedding`` are public: v2 builds soft embeddings from them and
    passes ``pre_embedded`` instead of tokens.
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
        self.pack_real_positions: bool | None = None
        """Run the token-wise layers on real positions only: None = on CPU (where it saves
        the ~25% of the work spent on PAD rows), except bf16 inference; off on CUDA, where
        selecting the rows would need a host sync every step."""

    def use_reference_kernels(self) -> None:
        """Switch the CPU speed-ups off (dense rows, torch dropout, fused attention): the
        computation as the original code did it, for benchmarks and cross-checks."""
        self.pack_real_positions = False
        for block in self.blocks:
            block.fast_cpu = False

    def _packs(self, x: Tensor) -> bool:
        if self.pack_real_positions is None:
            # bf16 sampling on CPU: the matmuls are cheap and the row gathers cost more than
            # they save (bench/sample.py --precision bf16 [--dense]); bf16 training still
            # gains from packing.
            return x.device.type == "cpu" and not (torch.is_inference_mode_enabled()
                                                   and _cpu_autocast())
        return self.pack_real_positions

    def _blocks_packed(self, x: Tensor, c: Tensor, pad_mask: Tensor, key_mask: Tensor
                       ) -> Tensor:
        """Blocks + final modulation on the real rows; PAD rows come back as zeros (their
        outputs are never used: PAD keys are masked and PAD logits ignored)."""
        b, s, d = x.shape
        rows = pad_mask.reshape(-1).nonzero().squeeze(1)
        sample = torch.div(rows, s, rounding_mode="floor")
        xp = x.reshape(b * s, d).index_select(0, rows)
        for block in self.blocks:
            xp = block.forward_packed(xp, c, key_mask, rows, sample)
        shift, scale = self.final_modulation(c).index_select(0, sample).chunk(2, -1)
        xp = _modulate(self.final_norm(xp), shift, scale)
        return xp.new_zeros(b * s, d).index_copy(0, rows, xp).view(b, s, d)

    def positional_encoding(self) -> Tensor:
        """``[S, d]``: entity type + node index (nodes) or pair_i + pair_j (edges)."""
        node_pos = self.node_index_emb(self.node_idx)
        edge_pos = self.pair_index_emb(self.edge_i) + self.pair_index_emb(self.edge_j)
        return self.entity_type_emb(self.entity) + torch.cat([node_pos, edge_pos], dim=0)

    def embed(self, tokens: Tensor) -> Tensor:
        n = self.vocab.n_max
        return torch.cat([self.node_embedding(tokens[:, :n]),
                          self.edge_embedding(tokens[:, n:])], dim=1)

    def _time(self, t: Tensor | float, batch: int, device: torch.device) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float32, device=device)
        if t.dim() == 0 or (t.dim() == 1 and t.numel() == 1):
            return t.reshape(1).expand(batch)
        if t.dim() == 1 and t.numel() == batch:
            return t
        raise ValueError(f"t must be a number, a 0-d, 1-element or length-{batch} 1-d tensor; "
                         f"got shape {tuple(t.shape)}")

    def forward(self, tokens: Tensor, pad_mask: Tensor, t: Tensor | float,
                condition: object = None, pre_embedded: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        b, s = tokens.shape
        if s != self.vocab.seq_len:
            raise ValueError(f"tokens have length {s}, the model expects {self.vocab.seq_len}")
        x = self.embed(tokens) if pre_embedded is None else pre_embedded
        x = x + self.positional_encoding()
        t = self._time(t, b, tokens.device)
        c = F.silu(self.time_mlp(timestep_embedding(t, self.config.frequency_embedding_size)))
        key_mask = pad_mask[:, None, None, :]  # True = attend; PAD keys excluded
        if self._packs(x):
            x = self._blocks_packed(x, c, pad_mask, key_mask)
        else:
            for block in self.blocks:
                x = block(x, c, key_mask)
            shift, scale = self.final_modulation(c)[:, None].chunk(2, -1)
            x = _modulate(self.final_norm(x), shift, scale)
        n = self.vocab.n_max
        node_logits = self.node_head(x[:, :n]) + self.node_subs
        edge_logits = self.edge_head(x[:, n:]) + self.edge_subs
        return node_logits, edge_logits


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
