"""Self-describing checkpoints: everything needed to use or resume a model in one file.

A checkpoint is ``torch.save`` of a plain dict (tensors, numbers, strings, lists, dicts), so
it loads with ``weights_only=True``: no pickled classes, nothing executed on load. It carries
the model and training config, the vocabulary (n_max), the dataset identity and split, the
train-split statistics the sampler and the loss need, the noise schedule, and, for resuming,
the optimiser / LR-schedule / RNG states.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bdgen import __version__
from bdgen.data.vocab import VocabConfig
from bdgen.errors import BdgenError
from bdgen.model.denoiser import ModelConfig
from bdgen.model.fast_forward import FastDenoiser
from bdgen.util.atomic import atomic_torch_save

FORMAT = "bdgen-checkpoint"
FORMAT_VERSION = 1


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Checkpoint:
    version: str                    # "v1" | "v2"
    model_config: dict[str, Any]
    n_max: int
    noise: dict[str, Any]                     # e.g. {"type": "loglinear", "eps": 0.001}
    train_config: dict[str, Any]
    dataset_hash: str
    dataset_id: str
    split: dict[str, Any]                     # {"seed": 42, "fractions": [0.8, 0.1, 0.1]}
    num_rooms_distribution: list[float]
    edge_class_weights: list[float]
    step: int
    model_state: dict[str, Any]
    rate_network_state: dict[str, Any] | None = None
    rate_network_config: dict[str, Any] | None = None
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    rng_state: dict[str, Any] | None = None
    bdgen_version: str = __version__
    created: str = field(default_factory=_now)

    @property
    def vocab(self) -> VocabConfig:
        return VocabConfig(self.n_max)

    @property
    def noise_type(self) -> str:
        return str(self.noise.get("type", "unknown"))


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> None:
    """Write atomically: a temp file in the same directory, then ``os.replace``."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(ckpt)}
    atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    n_max: int | None = None) -> Checkpoint:
    """Read a checkpoint; BdgenError if missing, truncated, not a bdgen checkpoint, or made
    for another vocabulary than ``n_max`` (when given)."""
    path = Path(path)
    if not path.is_file():
        raise BdgenError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for damaged zip/pickle data
        raise BdgenError(f"checkpoint {path} is truncated or corrupt "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BdgenError(f"{path} is not a bdgen checkpoint (no '{FORMAT}' marker)")
    if data.get("format_version") != FORMAT_VERSION:
        raise BdgenError(f"checkpoint {path} has format version {data.get('format_version')}, "
                         f"this bdgen reads {FORMAT_VERSION}")
    names = {f.name for f in fields(Checkpoint)}
    required = [f.name for f in fields(Checkpoint)
                if f.default is MISSING and f.default_factory is MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise BdgenError(f"checkpoint {path} lacks fields: {', '.join(missing)}")
    ckpt = Checkpoint(**{k: v for k, v in data.items() if k in names})
    if n_max is not None and ckpt.n_max != n_max:
        raise BdgenError(f"checkpoint {path} was made for n_max={ckpt.n_max} "
                         f"(seq_len {ckpt.vocab.seq_len}), not n_max={n_max}")
    return ckpt


def build_denoiser(ckpt: Checkpoint, device: str | torch.device = "cpu") -> FastDenoiser:
    """The checkpoint's denoiser (the fast paths of :mod:`bdgen.model.fast_forward`) in
    eval mode with dropout 0 (generation/evaluation)."""
    config = ModelConfig.from_dict({**ckpt.model_config, "dropout": 0.0})
    model = FastDenoiser(config, ckpt.vocab)
    try:
        model.load_state_dict(ckpt.model_state)
    except RuntimeError as exc:
        raise BdgenError(f"checkpoint weights do not fit its model config/vocabulary "
                         f"(n_max={ckpt.n_max}): {str(exc).splitlines()[0][:160]}") from None
    return model.to(device).eval()


def model_id(ckpt: Checkpoint, sha256: str) -> str:
    """Identity of a trained model: version, noise type and the checkpoint file's hash."""
    return f"{ckpt.version}-{ckpt.noise_type}-{sha256[:10]}"
