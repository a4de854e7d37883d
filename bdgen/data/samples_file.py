"""Self-describing samples files: one (model, method, seed) generation run.

A samples file is ``torch.save`` of a plain dict (tensors, str, int, float, bool, None,
lists and dicts only), so ``torch.load(..., weights_only=True)`` reads it without
unpickling code. It carries the tokens plus everything needed to know where they came
from: the method name and its legacy config, the model's identity and hash, seed, steps,
library/format version and timings. Writes are atomic (temp file + ``os.replace``).
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bdgen import __version__
from bdgen.data.vocab import EDGE_VOCAB_SIZE, NODE_VOCAB_SIZE, VocabConfig
from bdgen.errors import BdgenError
from bdgen.util.atomic import atomic_write_bytes

SAMPLES_FORMAT_VERSION = 1
#: Keys that files written before guided sampling do not have.
OPTIONAL_KEYS = ("constraints", "diagnostics")
MODEL_KEYS = ("id", "sha256", "version", "noise", "dataset_hash", "dataset_id", "n_max",
              "split")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class SamplesFile:
    tokens: torch.Tensor      # int64 [N, S]
    pad_mask: torch.Tensor    # bool  [N, S] (True = real position)
    num_rooms: torch.Tensor   # int64 [N]
    method: str               # Method.format()
    method_config: dict[str, Any]  # Method.legacy_config()
    model: dict[str, Any]          # MODEL_KEYS: id, sha256, version, noise, dataset_*, n_max, split
    seed: int
    steps: int
    num_samples: int
    timings: dict[str, Any]             # {"wall_s", "samples_per_s", "model_calls"}
    bdgen_version: str = ""
    created: str = ""
    # Guided runs only: the compiled constraint set with its P90 normalisers
    # (``ConstraintSet.to_dict()`` plus ``"identity"``), and the per-step diagnostics
    # (name -> list of per-step floats). Unguided files carry None.
    constraints: dict[str, Any] | None = None
    diagnostics: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.bdgen_version:
            self.bdgen_version = __version__
        if not self.created:
            self.created = _now()

    @property
    def n_max(self) -> int:
        return int(self.model.get("n_max") or _n_max_of(self.tokens.shape[1], "<memory>"))

    def to_dict(self) -> dict[str, Any]:
        # Optional keys are left out when None, so unguided files keep their old bytes.
        d = {f.name: getattr(self, f.name) for f in fields(self)
             if not (f.name in OPTIONAL_KEYS and getattr(self, f.name) is None)}
        d["tokens"] = self.tokens.detach().to("cpu", torch.int64).contiguous()
        d["pad_mask"] = self.pad_mask.detach().to("cpu", torch.bool).contiguous()
        d["num_rooms"] = self.num_rooms.detach().to("cpu", torch.int64).contiguous()
        d["format_version"] = SAMPLES_FORMAT_VERSION
        return d


def _n_max_of(seq_len: int, where: str) -> int:
    for n in range(2, 64):
        if VocabConfig(n).seq_len == seq_len:
            return n
    raise BdgenError(f"{where}: sequence length {seq_len} is not n + n(n-1)/2 for any n_max")


def validate_samples(sf: SamplesFile, where: str = "<memory>") -> None:
    """Shapes, dtypes, token ranges and PAD layout; :class:`BdgenError` naming ``where``."""
    t, m, r = sf.tokens, sf.pad_mask, sf.num_rooms
    if not (isinstance(t, torch.Tensor) and isinstance(m, torch.Tensor)
            and isinstance(r, torch.Tensor)):
        raise BdgenError(f"{where}: tokens/pad_mask/num_rooms must be tensors")
    if t.dtype != torch.int64 or m.dtype != torch.bool or r.dtype != torch.int64:
        raise BdgenError(f"{where}: wrong dtypes (tokens {t.dtype}, pad_mask {m.dtype}, "
                         f"num_rooms {r.dtype}; want int64, bool, int64)")
    if t.dim() != 2 or m.shape != t.shape or r.shape != (t.shape[0],):
        raise BdgenError(f"{where}: wrong shapes (tokens {tuple(t.shape)}, pad_mask "
                         f"{tuple(m.shape)}, num_rooms {tuple(r.shape)})")
    if t.shape[0] != sf.num_samples:
        raise BdgenError(f"{where}: {t.shape[0]} samples stored but num_samples = "
                         f"{sf.num_samples}")
    n_max = _n_max_of(t.shape[1], where)
    if sf.model.get("n_max") not in (None, n_max):
        raise BdgenError(f"{where}: sequence length {t.shape[1]} does not match n_max = "
                         f"{sf.model.get('n_max')}")
    if t.numel():
        nodes, edges = t[:, :n_max], t[:, n_max:]
        if nodes.min() < 0 or nodes.max() >= NODE_VOCAB_SIZE or (
                edges.numel() and (edges.min() < 0 or edges.max() >= EDGE_VOCAB_SIZE)):
            raise BdgenError(f"{where}: tokens out of range (nodes [0, {NODE_VOCAB_SIZE}), "
                             f"edges [0, {EDGE_VOCAB_SIZE}))")
        if r.min() < 1 or r.max() > n_max:
            raise BdgenError(f"{where}: num_rooms out of range [1, {n_max}]")
        table = torch.from_numpy(VocabConfig(n_max).pad_mask_table)
        if not torch.equal(table[r], m):
            raise BdgenError(f"{where}: pad_mask does not match num_rooms")


def save_samples(sf: SamplesFile, path: str | os.PathLike[str]) -> str:
    """Validate and write ``sf`` atomically; returns the sha256 of the written file."""
    path = Path(path)
    validate_samples(sf, str(path))
    buf = io.BytesIO()
    torch.save(sf.to_dict(), buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_samples(path: str | os.PathLike[str]) -> SamplesFile:
    """Read and validate a samples file; :class:`BdgenError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise BdgenError(f"samples file not found: {path}")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BdgenError(f"{path}: not a readable samples file (truncated or corrupt: "
                         f"{type(exc).__name__})") from None
    if not isinstance(d, dict) or "format_version" not in d:
        raise BdgenError(f"{path}: not a bdgen samples file (no format_version)")
    if d["format_version"] != SAMPLES_FORMAT_VERSION:
        raise BdgenError(f"{path}: samples format_version {d['format_version']!r} is not "
                         f"supported (expected {SAMPLES_FORMAT_VERSION})")
    names = [f.name for f in fields(SamplesFile)]
    missing = [n for n in names if n not in d and n not in OPTIONAL_KEYS]
    if missing:
        raise BdgenError(f"{path}: samples file lacks {', '.join(missing)}")
    sf = SamplesFile(**{n: d[n] for n in names if n in d})
    validate_samples(sf, str(path))
    return sf
