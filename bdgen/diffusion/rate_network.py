"""The v2 rate network: a learned, per-position forward process (spec §4.1).

Every sequence position l gets its own monotone keep-probability schedule

    α_l(t) = sigmoid(−γ_l(t)),   γ_l(t) = γ_min + (γ_max − γ_min)·ĝ_l(t),
    ĝ_l(t) = Σ_k w_{l,k} t^k / Σ_k w_{l,k}        (w > 0 ⇒ ĝ increasing, ĝ(0)=0, ĝ(1)=1)

with coefficients w_l computed from a *structural* embedding of the position only (node slot i:
H[i]; edge slot (i, j): H[i] + H[j]). The schedule therefore depends on t and the position, never
on graph content (apart from the PAD override). Everything is evaluated in float32 (spec §3.6):
callers that need a float64 difference or ratio promote the float32 results themselves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bdgen.data.vocab import VocabConfig
from bdgen.errors import BdgenError

NOISE_TYPE_LEARNED = "learned"


@dataclass(frozen=True)
class RateNetworkConfig:
    """Hyper-parameters of :class:`RateNetwork` (legacy ``configs/noise/learned.yaml``)."""

    d_emb: int = 32
    K: int = 4
    gamma_min: float = -13.0
    gamma_max: float = 5.0
    hidden_dim: int = 64

    def __post_init__(self) -> None:
        if self.d_emb < 1 or self.K < 1 or self.hidden_dim < 1:
            raise BdgenError(f"rate network sizes must be >= 1, got {self}")
        if not self.gamma_min < self.gamma_max:
            raise BdgenError(
                f"rate network needs gamma_min < gamma_max, got {self.gamma_min}, {self.gamma_max}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML/checkpoint friendly)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RateNetworkConfig:
        """Inverse of :meth:`to_dict`; tolerates a ``type: learned`` key (a noise config)."""
        data = dict(data or {})
        noise_type = data.pop("type", NOISE_TYPE_LEARNED)
        if noise_type != NOISE_TYPE_LEARNED:
            raise BdgenError(f"rate network config has type {noise_type!r}, expected 'learned'")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BdgenError(f"unknown rate network config keys {unknown}; valid: {sorted(known)}")
        return cls(
            d_emb=int(data.get("d_emb", cls.d_emb)),
            K=int(data.get("K", cls.K)),
            gamma_min=float(data.get("gamma_min", cls.gamma_min)),
            gamma_max=float(data.get("gamma_max", cls.gamma_max)),
            hidden_dim=int(data.get("hidden_dim", cls.hidden_dim)),
        )


class Rates(NamedTuple):
    """Per-position schedule values, all float32 ``[B, S]``."""

    alpha: torch.Tensor
    alpha_prime: torch.Tensor
    gamma: torch.Tensor


def as_time_column(t: torch.Tensor | float, batch: int | None,
                   device: torch.device) -> torch.Tensor:
    """Normalise a time argument to a float32 ``[B, 1]`` column.

    Accepts a Python number, a 0-d tensor, a 1-element tensor (broadcast to ``batch``), a
    length-B vector or a ``[B, 1]`` column.
    """
    t = torch.as_tensor(t, device=device).to(torch.float32)
    if t.dim() == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() == 0 or (t.dim() == 1 and t.numel() == 1):
        return t.reshape(1, 1).expand(batch or 1, 1)
    if t.dim() != 1 or (batch is not None and t.shape[0] != batch):
        raise ValueError(f"t must be a scalar or a length-{batch} vector, "
                         f"got shape {tuple(t.shape)}")
    return t[:, None]


class RateNetwork(nn.Module):
    """Per-position learned schedule α_l(t) with analytic α' (4,740 parameters by default)."""

    def __init__(self, config: RateNetworkConfig | None = None, vocab: VocabConfig | None = None):
        super().__init__()
        self.config = config or RateNetworkConfig()
        self.vocab = vocab or VocabConfig()
        c, n_max = self.config, self.vocab.n_max
        # H: a standard embedding table (N(0, 1) init, like the denoiser's tables), so that
        # positions start with distinct schedules.
        self.node_table = nn.Embedding(n_max, c.d_emb)
        self.node_proj = nn.Linear(c.d_emb, c.d_emb)
        self.edge_proj = nn.Linear(c.d_emb, c.d_emb)
        self.coef_mlp = nn.Sequential(
            nn.Linear(c.d_emb, c.hidden_dim), nn.SiLU(), nn.Linear(c.hidden_dim, c.K)
        )
        pairs = torch.as_tensor(self.vocab.edge_pairs, dtype=torch.long)
        self.edge_i: Tensor
        self.edge_j: Tensor
        self.powers: Tensor
        self.register_buffer("edge_i", pairs[:, 0].clone(), persistent=False)
        self.register_buffer("edge_j", pairs[:, 1].clone(), persistent=False)
        powers = torch.arange(1, c.K + 1, dtype=torch.float32)
        self.register_buffer("powers", powers, persistent=False)

    @property
    def seq_len(self) -> int:
        return self.vocab.seq_len

    def coefficients(self) -> torch.Tensor:
        """Positive polynomial coefficients ``w [S, K]`` (float32), one row per position."""
        table = self.node_table.weight.float()
        node_h = table  # node slot i -> H[i]
        edge_h = table[self.edge_i] + table[self.edge_j]  # edge slot (i, j) -> H[i] + H[j]
        z = torch.cat([self.node_proj(node_h), self.edge_proj(edge_h)], dim=0)
        return F.softplus(self.coef_mlp(z))

    def rates(self, t: torch.Tensor | float, pad_mask: torch.Tensor | None = None) -> Rates:
        """α, α' and γ at time(s) ``t`` for every position: float32 ``[B, S]``.

        With ``pad_mask`` (bool ``[B, S]``, True = real), PAD positions get α = 1, α' = 0,
        γ = γ_min; without it every position is real (and B comes from ``t``).
        """
        device = self.node_table.weight.device
        batch = pad_mask.shape[0] if pad_mask is not None else None
        with torch.autocast(device_type=device.type, enabled=False):
            tc = as_time_column(t, batch, device)  # [B, 1] float32
            w = self.coefficients()  # [S, K]
            norm = w.sum(dim=-1)  # [S]
            tp = tc[:, :, None] ** self.powers  # [B, 1, K]: t^k
            dtp = self.powers * tc[:, :, None] ** (self.powers - 1)  # k t^(k-1)
            g = (tp * w).sum(-1) / norm  # [B, S]
            dg = (dtp * w).sum(-1) / norm
            span = self.config.gamma_max - self.config.gamma_min
            gamma = self.config.gamma_min + span * g
            alpha = torch.sigmoid(-gamma)
            alpha_prime = -alpha * (1.0 - alpha) * span * dg
            if pad_mask is not None:
                if pad_mask.shape[1] != self.seq_len:
                    raise ValueError(
                        f"pad_mask has {pad_mask.shape[1]} positions, rate network {self.seq_len}"
                    )
                real = pad_mask.to(device=device, dtype=torch.bool)
                alpha = torch.where(real, alpha, torch.ones_like(alpha))
                alpha_prime = torch.where(real, alpha_prime, torch.zeros_like(alpha_prime))
                gamma = torch.where(real, gamma, torch.full_like(gamma, self.config.gamma_min))
        return Rates(alpha, alpha_prime, gamma)

    def forward(self, t: torch.Tensor | float,
                pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Keep probability α ``[B, S]`` (float32)."""
        return self.rates(t, pad_mask).alpha


def rate_network_param_count(config: RateNetworkConfig | None = None, n_max: int = 8) -> int:
    """Closed-form parameter count (spec §4.1): 4,740 for the defaults."""
    c = config or RateNetworkConfig()
    d, h, k = c.d_emb, c.hidden_dim, c.K
    return n_max * d + 2 * (d * d + d) + (d * h + h) + (h * k + k)


def build_rate_network(ckpt: Any, device: str | torch.device = "cpu") -> RateNetwork:
    """Rebuild a v2 checkpoint's rate network (eval mode) from the checkpoint alone.

    ``ckpt`` is a :class:`bdgen.model.checkpoint.Checkpoint` carrying ``rate_network_state``
    and ``rate_network_config`` (falling back to the ``noise`` dict for the hyper-parameters).
    """
    if getattr(ckpt, "rate_network_state", None) is None:
        raise BdgenError(f"checkpoint (version {getattr(ckpt, 'version', '?')}) has no rate "
                         "network: it is not a v2 (learned noise) model")
    raw = ckpt.rate_network_config
    if raw is None:
        keys = RateNetworkConfig.__dataclass_fields__
        raw = {k: v for k, v in (ckpt.noise or {}).items() if k in keys}
    net = RateNetwork(RateNetworkConfig.from_dict(raw), VocabConfig(ckpt.n_max))
    try:
        net.load_state_dict(ckpt.rate_network_state)
    except RuntimeError as exc:
        raise BdgenError("checkpoint rate network weights do not fit its config: "
                         f"{str(exc).splitlines()[0][:160]}") from None
    return net.to(device).eval()

