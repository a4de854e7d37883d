"""ReMDM remasking strategies (spec §5.5-5.7), a registry of small classes.

A strategy turns this step's remasking budget ``sigma_max`` (float32 ``[B, 1]`` or
``[B, S]``, from the forward process) into per-position remasking probabilities over the
candidates (decoded and real positions). The sampler draws ``U ~ U[0, 1)`` for all
``[B, S]`` positions and re-masks candidate ``l`` iff ``U_l < sigma_l``. When and whether a
strategy fires (``i > 0``, ``t_now < t_switch``) is the sampler's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from bdgen.errors import BdgenError


@dataclass(frozen=True)
class RemaskingStrategy:
    name: ClassVar[str] = ""
    uses_logits: ClassVar[bool] = False  # needs this step's probabilities of the current tokens

    @property
    def active(self) -> bool:
        """False when the strategy can never re-mask anything (cap/rescale with eta = 0)."""
        return True

    def probabilities(self, sigma_max: Tensor, candidates: Tensor,
                      token_probs: Tensor | None) -> Tensor:
        """Per-position remasking probability, float32 broadcastable to ``[B, S]``.

        ``candidates``: bool ``[B, S]``; ``token_probs``: float32 ``[B, S]`` probability of
        the current token under this step's logits (only for ``uses_logits`` strategies).
        """
        raise NotImplementedError


def _check_eta(eta: float) -> float:
    eta = float(eta)
    if not eta >= 0.0 or eta == float("inf"):
        raise BdgenError(f"remasking eta must be a finite number >= 0, got {eta!r}")
    return eta


@dataclass(frozen=True)
class _EtaStrategy(RemaskingStrategy):
    """A strategy whose budget is set by ``eta >= 0``; eta = 0 turns remasking off."""

    eta: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "eta", _check_eta(self.eta))

    @property
    def active(self) -> bool:
        return self.eta > 0.0


@dataclass(frozen=True)
class Cap(_EtaStrategy):
    """ReMDM-cap: sigma = min(eta, sigma_max) for every candidate."""

    name: ClassVar[str] = "cap"

    def probabilities(self, sigma_max: Tensor, candidates: Tensor,
                      token_probs: Tensor | None = None) -> Tensor:
        return sigma_max.clamp_max(self.eta)


@dataclass(frozen=True)
class Rescale(_EtaStrategy):
    """ReMDM-rescale: sigma = eta * sigma_max for every candidate."""

    name: ClassVar[str] = "rescale"

    def probabilities(self, sigma_max: Tensor, candidates: Tensor,
                      token_probs: Tensor | None = None) -> Tensor:
        return sigma_max * self.eta


@dataclass(frozen=True)
class Confidence(RemaskingStrategy):
    """ReMDM confidence (paper §4.1): redistribute sigma_max towards low-confidence tokens.

    pi = softmax over candidates of (-c), sigma_l = clamp(sigma_max * pi_l * n_dec, 0, 1):
    the average over candidates is sigma_max before clamping. eta is ignored. With zero
    candidates the softmax is NaN and every ``U < NaN`` comparison is False: nothing fires.
    """

    name: ClassVar[str] = "confidence"
    uses_logits: ClassVar[bool] = True

    def probabilities(self, sigma_max: Tensor, candidates: Tensor,
                      token_probs: Tensor | None = None) -> Tensor:
        if token_probs is None:
            raise ValueError("confidence remasking needs the current tokens' probabilities")
        neg = torch.where(candidates, -token_probs, torch.full_like(token_probs, -torch.inf))
        pi = torch.softmax(neg, dim=-1)
        n_dec = candidates.sum(-1, keepdim=True).clamp_min(1).to(torch.float32)
        return (sigma_max * pi * n_dec).clamp(0.0, 1.0)


STRATEGIES: dict[str, type[RemaskingStrategy]] = {
    cls.name: cls for cls in (Cap, Rescale, Confidence)
}


def make_strategy(name: str, eta: float | None = None) -> RemaskingStrategy:
    """Build a strategy by name; unknown names are an error listing the valid ones."""
    if name not in STRATEGIES:
        raise BdgenError(f"unknown remasking strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    if name == "confidence":
        if eta is not None:
            _check_eta(eta)  # validated, then ignored (spec §5.6)
        return Confidence()
    cls = Cap if name == "cap" else Rescale
    return cls(eta=0.1 if eta is None else eta)
