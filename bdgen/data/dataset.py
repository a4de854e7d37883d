"""Prepared datasets: tokenised graphs in one versioned, content-hashed file (spec §1.6-1.9).

A :class:`PreparedDataset` is what ``bdgen data prepare`` writes and every later stage
reads. Its identity is ``dataset_hash``, the sha256 of the canonical content (``n_max`` and
the token matrix), so the same graphs always give the same id whatever the source file's
name, and a file edited after preparation is detected at load time.

Splits follow spec §1.7 exactly (CPU ``torch.Generator`` seeded with ``seed``,
``randperm``, floor of the train/val fractions, test = remainder); class weights and the
room-count distribution (§1.8-1.9) come from the train split only.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bdgen.data.graph import Graph, detokenize, tokenize_many
from bdgen.data.vocab import EDGE_VOCAB_SIZE, NODE_PAD, NODE_VOCAB_SIZE, VocabConfig
from bdgen.errors import BdgenError
from bdgen.util.atomic import atomic_torch_save

FORMAT = "bdgen-dataset"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def _vocab_for_seq_len(seq_len: int) -> VocabConfig:
    """The vocabulary whose ``seq_len`` is ``seq_len`` (n + n(n-1)/2 is increasing in n)."""
    n = 2
    while n + n * (n - 1) // 2 < seq_len:
        n += 1
    if n + n * (n - 1) // 2 != seq_len:
        raise ValueError(f"no n_max gives a sequence length of {seq_len}")
    return VocabConfig(n)


@dataclass
class SplitData:
    """One split; tensors on CPU."""

    tokens: torch.Tensor  # int64 [N, S]
    pad_mask: torch.Tensor  # bool [N, S], True = real position
    num_rooms: torch.Tensor  # int64 [N]
    vocab: VocabConfig | None = None  # inferred from S when None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def graphs(self) -> list[Graph]:
        """Detokenised graphs, in split order."""
        vocab = self.vocab or _vocab_for_seq_len(int(self.tokens.shape[1]))
        tokens, pads = self.tokens.numpy(), self.pad_mask.numpy()
        return [detokenize(t, p, vocab) for t, p in zip(tokens, pads)]


@dataclass
class TrainStats:
    """Statistics of the TRAIN split only (spec §1.7-1.9)."""

    edge_class_weights: list[float]  # 13
    node_class_weights: list[float]  # 15
    num_rooms_distribution: list[float]  # n_max entries, P(num_rooms = k + 1)


def class_weights(values: np.ndarray, vocab_size: int) -> list[float]:
    """``N / (V * count_c)`` for seen classes, 0 for unseen ones (spec §1.8)."""
    counts = np.bincount(values.reshape(-1), minlength=vocab_size)[:vocab_size].astype(float)
    total = counts.sum()
    weights = np.zeros(vocab_size)
    seen = counts > 0
    weights[seen] = total / (vocab_size * counts[seen])
    result: list[float] = weights.tolist()
    return result


def content_hash(tokens: torch.Tensor, n_max: int) -> str:
    """sha256 of the canonical content: a tag, ``n_max`` and the int64 LE token matrix."""
    arr = np.ascontiguousarray(tokens.numpy(), dtype="<i8")
    h = hashlib.sha256()
    h.update(f"{FORMAT}\0n_max={n_max}\0shape={arr.shape[0]}x{arr.shape[1]}\0".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def split_indices(n: int, name: str, seed: int = 42,
                  fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> torch.Tensor:
    """Indices of split ``name`` among ``n`` items (spec §1.7)."""
    if name not in SPLITS:
        raise BdgenError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise BdgenError(f"split fractions {tuple(fractions)} must be 3 non-negative numbers "
                         "summing to 1")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = math.floor(fractions[0] * n)
    n_val = math.floor(fractions[1] * n)
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val),
              "test": (n_train + n_val, n)}
    lo, hi = bounds[name]
    return perm[lo:hi]


@dataclass
class PreparedDataset:
    tokens: torch.Tensor  # int64 [N, S]
    num_rooms: torch.Tensor  # int64 [N]
    vocab: VocabConfig
    source: str  # "synthetic" | "graph2plan"
    params: dict[str, Any]  # generator params, or the .mat file's sha256 etc.
    dataset_hash: str  # content_hash(tokens, n_max)

    @property
    def dataset_id(self) -> str:
        return f"{self.source}-{self.dataset_hash[:12]}"

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @classmethod
    def from_graphs(cls, graphs: list[Graph], vocab: VocabConfig, source: str,
                    params: dict[str, Any]) -> PreparedDataset:
        if not graphs:
            raise BdgenError(f"no graphs to prepare from source {source!r}")
        tokens_np, _ = tokenize_many(graphs, vocab)
        tokens = torch.from_numpy(tokens_np)
        num_rooms = torch.tensor([g.num_rooms for g in graphs], dtype=torch.int64)
        return cls(tokens, num_rooms, vocab, source, dict(params),
                   content_hash(tokens, vocab.n_max))

    @property
    def pad_mask(self) -> torch.Tensor:
        return torch.from_numpy(self.vocab.pad_mask_table[self.num_rooms.numpy()])

    def graphs(self) -> list[Graph]:
        return SplitData(self.tokens, self.pad_mask, self.num_rooms, self.vocab).graphs()

    # --- file format ---------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Atomic write (temp file in the same directory, then ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "n_max": self.vocab.n_max,
            "source": self.source,
            "params": self.params,
            "dataset_hash": self.dataset_hash,
            "tokens": self.tokens.contiguous(),
            "num_rooms": self.num_rooms.contiguous(),
        }
        atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PreparedDataset:
        """Load and verify; BdgenError on missing/corrupt/foreign/newer files or hash mismatch."""
        path = Path(path)
        if not path.is_file():
            raise BdgenError(f"{path}: dataset file not found")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BdgenError(f"{path}: unreadable dataset file (truncated or corrupt: "
                             f"{reason[:200]})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise BdgenError(f"{path}: not a bdgen dataset file")
        version = payload.get("format_version")
        if version != FORMAT_VERSION:
            raise BdgenError(f"{path}: dataset format_version {version!r} is not supported "
                             f"(this bdgen reads {FORMAT_VERSION})")
        try:
            vocab = VocabConfig(int(payload["n_max"]))
            tokens, num_rooms = payload["tokens"], payload["num_rooms"]
            ds = cls(tokens, num_rooms, vocab, str(payload["source"]), dict(payload["params"]),
                     str(payload["dataset_hash"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BdgenError(f"{path}: malformed dataset file ({exc})") from None
        if (not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.int64
                or tokens.dim() != 2 or tokens.shape[1] != vocab.seq_len
                or not isinstance(num_rooms, torch.Tensor)
                or num_rooms.shape != (tokens.shape[0],)):
            raise BdgenError(f"{path}: tokens/num_rooms have the wrong type or shape")
        actual = content_hash(tokens, vocab.n_max)
        if actual != ds.dataset_hash:
            raise BdgenError(f"{path}: content hash mismatch (file says "
                             f"{ds.dataset_hash[:12]}, content is {actual[:12]}); "
                             "the file was modified or damaged")
        counted = (tokens[:, : vocab.n_max] != NODE_PAD).sum(1)
        if not torch.equal(counted, num_rooms):
            raise BdgenError(f"{path}: num_rooms disagrees with the node tokens")
        return ds

    # --- splits and statistics -----------------------------------------------------
    def split(self, name: str, seed: int = 42,
              fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> SplitData:
        """Split ``name`` of spec §1.7 (deterministic in seed and fractions)."""
        a, b, c = fractions
        idx = split_indices(len(self), name, seed, (a, b, c))
        rooms = self.num_rooms[idx]
        pad = torch.from_numpy(self.vocab.pad_mask_table[rooms.numpy()])
        return SplitData(self.tokens[idx], pad, rooms, self.vocab)

    def train_stats(self, seed: int = 42,
                    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> TrainStats:
        """Class weights and room-count distribution of the train split (spec §1.8-1.9)."""
        train = self.split("train", seed, fractions)
        if len(train) == 0:
            raise BdgenError(f"train split of {len(self)} graphs is empty")
        n = self.vocab.n_max
        tokens, pad = train.tokens.numpy(), train.pad_mask.numpy()
        nodes = tokens[:, :n][pad[:, :n]]
        edges = tokens[:, n:][pad[:, n:]]
        hist = np.bincount(train.num_rooms.numpy() - 1, minlength=n)[:n].astype(float)
        return TrainStats(
            edge_class_weights=class_weights(edges, EDGE_VOCAB_SIZE),
            node_class_weights=class_weights(nodes, NODE_VOCAB_SIZE),
            num_rooms_distribution=(hist / hist.sum()).tolist(),
        )


def prepare_synthetic(num_graphs: int | None = None, seed: int = 0,
                      n_max: int = 8, params: Any = None) -> PreparedDataset:
    """The built-in synthetic dataset (``bdgen.data.synthetic``), tokenised."""
    from bdgen.data import synthetic

    num_graphs = synthetic.DEFAULT_NUM_GRAPHS if num_graphs is None else num_graphs
    if num_graphs < 1:
        raise BdgenError(f"--num-graphs must be >= 1, got {num_graphs}")
    if n_max < synthetic.MAX_ROOMS:
        raise BdgenError(f"n_max={n_max} is too small for the synthetic generator "
                         f"(plans have up to {synthetic.MAX_ROOMS} rooms)")
    p = params or synthetic.SyntheticParams()
    graphs = synthetic.generate_graphs(num_graphs, seed, p)
    info = {"generator_version": synthetic.GENERATOR_VERSION, "num_graphs": num_graphs,
            "seed": seed, "n_max": n_max, "generator": p.to_dict()}
    return PreparedDataset.from_graphs(graphs, VocabConfig(n_max), "synthetic", info)


def prepare_graph2plan(mat_path: str | os.PathLike[str], n_max: int = 8,
                       cache_dir: str | os.PathLike[str] | None = None) -> PreparedDataset:
    """Graph2Plan's ``data.mat``, tokenised; ``params`` records the file's sha256."""
    from dataclasses import asdict

    from bdgen.data.graph2plan import load_graph2plan

    graphs, report, sha = load_graph2plan(mat_path, n_max, cache_dir)
    info = {"mat_sha256": sha, "mat_name": Path(mat_path).name, "n_max": n_max,
            "load_report": asdict(report)}
    return PreparedDataset.from_graphs(graphs, VocabConfig(n_max), "graph2plan", info)


__all__ = [
    "DEFAULT_FRACTIONS",
    "FORMAT_VERSION",
    "PreparedDataset",
    "SplitData",
    "TrainStats",
    "class_weights",
    "content_hash",
    "prepare_graph2plan",
    "prepare_synthetic",
    "split_indices",
]
