"""The denoiser transformer ``BDDenoiser`` (spec §2).

Node and edge slots have separate embedding tables and output heads; a composite learned
positional encoding tells node slots from edge slots and which rooms an edge joins; time
enters through adaLN-Zero modulation (DiT), so every block is the identity at initialisation
and all logits start at 0. PAD keys are masked out of attention, and the MASK/PAD logits are
forced to -inf ("SUBS"), so the model never predicts them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
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


def _pad_groups(pad_mask: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
    """``(sample indices, real positions)`` of each group of rows of ``pad_mask [B, S]``
    that share one PAD pattern (empty patterns skipped). Needs the mask on the host (one
    sync), which is why only the CPU path groups rows."""
    patterns, inverse = torch.unique(pad_mask, dim=0, return_inverse=True)
    for g, pattern in enumerate(patterns):
        pos = pattern.nonzero().squeeze(1)
        if pos.numel():
            yield (inverse == g).nonzero().squeeze(1), pos


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

    def _attention(self, qkv: Tensor, key_mask: Tensor | None) -> Tensor:
        """``qkv [B, S, 3d]`` -> attention output ``[B, S, d]`` (before the out projection);
        ``key_mask`` None = every key is real."""
        b, s, d3 = qkv.shape
        d = d3 // 3
        q, k, v = qkv.view(b, s, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if self.training and self.dropout > 0 and qkv.device.type == "cpu" and self.fast_cpu:
            # Written out so the attention-probability dropout uses the fast CPU dropout.
            scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask, float("-inf"))
            attn = dropout(scores.softmax(-1), self.dropout, True) @ v
        else:
            attn = F.scaled_dot_product_attention(
                q, k, v, attn_mask=key_mask, dropout_p=self.dropout if self.training else 0.0)
        return attn.transpose(1, 2).reshape(b, s, d)

    def forward(self, x: Tensor, c: Tensor, key_mask: Tensor | None) -> Tensor:
        if c.shape[0] == 1 and not (self.training and self.dropout > 0):
            return self._forward_shared_time(x, c, key_mask)
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

    def _forward_shared_time(self, x: Tensor, c: Tensor, key_mask: Tensor | None) -> Tensor:
        """:meth:`forward` when every row has the same time embedding ``c [1, cond]`` (a
        sampling step) and no dropout: shift/scale fold into the LayerNorms' affine
        parameters and the gates into the output projections' weights, which saves six
        elementwise passes over the activations (the same function up to float rounding)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[0].chunk(6)
        h = _shifted_layer_norm(x, self.norm1, shift1, scale1)
        x = _gated_residual(x, self._attention(self.qkv(h), key_mask), self.attn_out, gate1)
        h = _shifted_layer_norm(x, self.norm2, shift2, scale2)
        mlp_in, act, mlp_out = self.mlp
        return _gated_residual(x, act(mlp_in(h)), mlp_out, gate2)


def _shifted_layer_norm(x: Tensor, norm: nn.LayerNorm, shift: Tensor, scale: Tensor) -> Tensor:
    """``_modulate(norm(x), shift, scale)`` for one shared ``shift``/``scale [d]``."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight * (1 + scale),
                        norm.bias * (1 + scale) + shift, norm.eps)


def _gated_residual(x: Tensor, h: Tensor, layer: nn.Linear, gate: Tensor) -> Tensor:
    """``x + gate * layer(h)`` for one shared ``gate [d]``, as a single matmul into x."""
    d = x.shape[-1]
    out = torch.addmm(x.reshape(-1, d), h.reshape(-1, h.shape[-1]),
                      (layer.weight * gate[:, None]).t())
    return out.add_(layer.bias * gate).view(x.shape)


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
        """Skip PAD positions (a quarter of an RPLAN batch): in training by gathering the
        real rows around each attention (:meth:`_blocks_packed`), in eval mode by running
        each room count's real positions as a dense batch (:meth:`_blocks_bucketed`).
        None = on CPU; off on CUDA, where selecting the rows would need a host sync every
        step."""

        self.share_time = True
        """In eval mode a number ``t`` (one time for the whole batch) is embedded once and
        folded into the blocks' weights (:meth:`AdaLNBlock._forward_shared_time`)."""

    def use_reference_kernels(self) -> None:
        """Switch the speed-ups off (dense rows, torch dropout, fused attention, per-row
        time embeddings): the computation as the original code did it, for benchmarks and
        cross-checks."""
        self.pack_real_positions = False
        self.share_time = False
        for block in self.blocks:
            block.fast_cpu = False

    def _packs(self, x: Tensor) -> bool:
        if self.pack_real_positions is None:
            return x.device.type == "cpu"
        return self.pack_real_positions

    def _blocks_packed(self, x: Tensor, c: Tensor, pad_mask: Tensor, key_mask: Tensor
                       ) -> Tensor:
        """Blocks + final modulation on the real rows, gathered and scattered around each
        block's attention (training: one graph that torch.compile captures whole, and the
        dropout draws of earlier versions); PAD rows come back as zeros."""
        b, s, d = x.shape
        rows = pad_mask.reshape(-1).nonzero().squeeze(1)
        sample = torch.div(rows, s, rounding_mode="floor")
        xp = x.reshape(b * s, d).index_select(0, rows)
        for block in self.blocks:
            xp = block.forward_packed(xp, c, key_mask, rows, sample)
        shift, scale = self.final_modulation(c).index_select(0, sample).chunk(2, -1)
        xp = _modulate(self.final_norm(xp), shift, scale)
        return xp.new_zeros(b * s, d).index_copy(0, rows, xp).view(b, s, d)

    def _blocks_bucketed(self, x: Tensor, c: Tensor, pad_mask: Tensor) -> Tensor:
        """Blocks + final modulation on the real positions only, one group of samples with
        the same PAD pattern (i.e. the same room count) at a time.

        Why: a group's real positions form a dense ``[b_g, L_g, d]`` batch with no PAD key,
        so attention needs no mask and costs L_g^2 rather than S^2, and the token-wise
        layers skip the PAD rows (a quarter of an RPLAN batch) with one gather in and one
        scatter out instead of one per layer. PAD rows come back as zeros; their outputs
        are never used (PAD keys are masked in the dense path and PAD logits ignored).
        """
        b, s, d = x.shape
        flat = x.reshape(b * s, d)
        all_rows, parts = [], []
        for idx, pos in _pad_groups(pad_mask):
            rows = (idx[:, None] * s + pos[None, :]).reshape(-1)
            h = flat.index_select(0, rows).view(idx.numel(), pos.numel(), d)
            cg = c if c.shape[0] == 1 else c.index_select(0, idx)
            for block in self.blocks:
                h = block(h, cg, None)
            all_rows.append(rows)
            parts.append(self._final(h, cg).reshape(-1, d))
        if not parts:
            return torch.zeros_like(x)
        return flat.new_zeros(b * s, d).index_copy(
            0, torch.cat(all_rows), torch.cat(parts)).view(b, s, d)

    def _final(self, x: Tensor, c: Tensor) -> Tensor:
        if c.shape[0] == 1:
            shift, scale = self.final_modulation(c)[0].chunk(2)
            return _shifted_layer_norm(x, self.final_norm, shift, scale)
        shift, scale = self.final_modulation(c)[:, None].chunk(2, -1)
        return _modulate(self.final_norm(x), shift, scale)

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
        if self.share_time and not self.training and t.stride(0) == 0:
            t = t[:1]  # one t for the batch (a sampling step): embed once, fold into weights
        c = F.silu(self.time_mlp(timestep_embedding(t, self.config.frequency_embedding_size)))
        key_mask = pad_mask[:, None, None, :]  # True = attend; PAD keys excluded
        if self._packs(x):
            x = (self._blocks_packed(x, c, pad_mask, key_mask) if self.training
                 else self._blocks_bucketed(x, c, pad_mask))
        else:
            for block in self.blocks:
                x = block(x, c, key_mask)
            x = self._final(x, c)
        n = self.vocab.n_max
        node_logits = self.node_head(x[:, :n]) + self.node_subs
        edge_logits = self.edge_head(x[:, n:]) + self.edge_subs
        return node_logits, edge_logits


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
