"""``bdgen evaluate``: samples files -> per-seed metrics -> per (model, method) results.

The science is in :mod:`bdgen.eval`; this module does the file I/O around it: reading
samples files, finding the prepared dataset a model was trained on (by the hash the
samples file carries), the reference-statistics cache, the optional denoising block and
writing results (bdgen's JSON, or the exact legacy format_version 2 layout).

:func:`evaluate_samples_files` is the pure-ish core (no printing, no result files) that
the tracked jobs wrap; :func:`write_result` writes one result.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bdgen.data.dataset import PreparedDataset
from bdgen.data.samples_file import SamplesFile, load_samples
from bdgen.errors import BdgenError
from bdgen.eval.aggregate import Aggregate, MethodResult, aggregate_seeds, flatten
from bdgen.eval.arrays import GraphArrays
from bdgen.eval.constraints import constraint_metrics
from bdgen.eval.reference import EVALUATOR_VERSION, ReferenceStats
from bdgen.eval.registry import COMPOSITES, canonical_name
from bdgen.eval.results_json import results_document, write_results_json
from bdgen.eval.suite import evaluate_seed
from bdgen.guidance.constraints import ConstraintSet
from bdgen.pipeline.constraint_sets import constraints_for
from bdgen.pipeline.progress import iterate
from bdgen.util.atomic import atomic_torch_save, atomic_write_json
from bdgen.util.hashing import file_sha256

RESULT_FORMAT = "bdgen-evaluation"
RESULT_FORMAT_VERSION = 1
DEFAULT_SPLIT: dict[str, Any] = {"seed": 42, "fractions": [0.8, 0.1, 0.1]}

log = logging.getLogger(__name__)


@dataclass
class SamplesInfo:
    """Provenance of one evaluated samples file."""

    path: str
    sha256: str
    seed: int
    num_samples: int
    steps: int


@dataclass
class EvaluationResult:
    """One (model, method): per-seed metrics (legacy keys), aggregates and provenance."""

    model_id: str
    method: str
    method_config: dict
    model: dict  # the samples files' model block
    per_seed: dict[str, dict]  # seed (str) -> legacy-keyed metrics (+ num_pairs_eligible)
    summary: dict[str, Aggregate]  # flattened legacy key -> aggregate over seeds
    composites: dict[str, float]
    denoising: dict[str, float]
    samples: list[SamplesInfo]
    dataset: dict  # {"hash", "id", "path"}
    timings: dict = field(default_factory=dict)
    # The constraint set the constraint/* metrics were measured against
    # (ConstraintSet.to_dict() + "identity"), None when there are none.
    constraints: dict | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.per_seed]

    @property
    def num_samples(self) -> int:
        return self.samples[0].num_samples if self.samples else 0

    @property
    def steps(self) -> int:
        return self.samples[0].steps if self.samples else 0

    @property
    def constraint_set_id(self) -> str | None:
        return None if self.constraints is None else str(self.constraints["identity"])

    def legacy_config(self) -> dict:
        """The legacy ``config`` block (spec §7.2 key order; G6.4 ``num_constraints`` and
        bdgen's ``constraint_set`` identity when constraint metrics were measured)."""
        extra = {} if self.constraints is None else {
            "num_constraints": len(self.constraints["constraints"]),
            "constraint_set": self.constraint_set_id}
        return {"seeds": self.seeds, "num_samples": self.num_samples,
                "sampling_steps": self.steps, **self.method_config,
                "checkpoint": self.model_id, "is_v2": self.model.get("version") == "v2",
                **extra}

    def results_document(self, timestamp: str | None = None) -> dict:
        return results_document(self.method, self.legacy_config(), self.per_seed,
                                self.denoising, timestamp)

    def to_method_result(self) -> MethodResult:
        """The shape the store, leaderboard and reports read (canonical metric names)."""
        from bdgen.diffusion.method import Method

        metrics = {canonical_name(k): a for k, a in self.summary.items()}
        n = len(self.per_seed)
        for name, value in self.composites.items():
            metrics[name] = Aggregate(value, 0.0, n, (value,))
        return MethodResult(
            model=self.model_id, method=self.method, config=self.legacy_config(),
            metrics=metrics, seeds=tuple(self.seeds),
            model_fields={"version": self.model.get("version"),
                          "noise_schedule": (self.model.get("noise") or {}).get("type")},
            method_fields=Method.parse(self.method).fields(),
            denoising={canonical_name(k): v for k, v in self.denoising.items()},
            constraint_set=self.constraint_set_id or "")

    def to_json(self) -> dict:
        """bdgen's own result format: canonical metric names, provenance."""
        per_seed = {s: {canonical_name(k): v for k, v in flatten(m).items()}
                    for s, m in self.per_seed.items()}
        return {
            "format": RESULT_FORMAT,
            "format_version": RESULT_FORMAT_VERSION,
            "model": self.model,
            "method": self.method,
            "method_config": self.method_config,
            "seeds": self.seeds,
            "per_seed": per_seed,
            "summary": {canonical_name(k): {"mean": a.mean, "std": a.std, "n": a.n}
                        for k, a in self.summary.items()},
            "composites": self.composites,
            "constraints": self.constraints,
            "denoising": {canonical_name(k): v for k, v in self.denoising.items()},
            "provenance": {
                "samples_files": [vars(s) for s in self.samples],
                "dataset": self.dataset,
                "reference_split": {"name": "train", **self.model.get("split", DEFAULT_SPLIT)},
                "evaluator_version": EVALUATOR_VERSION,
                "created": self.created,
                "timings": self.timings,
            },
        }


# --- inputs ---------------------------------------------------------------------------------
def find_samples_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given; directories searched recursively for ``*.pt`` (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*.pt") if q.is_file()))
        elif p.exists():
            out.append(p)
        else:
            raise BdgenError(f"no such samples file or directory: {p}")
    return out


def resolve_dataset(samples: SamplesFile, where: str, dataset: PreparedDataset | None,
                    dataset_path: str | os.PathLike | None,
                    data_dir: str | os.PathLike | None) -> tuple[PreparedDataset, str]:
    """The prepared dataset the samples' model was trained on (matched by content hash)."""
    want = str(samples.model.get("dataset_hash", ""))
    if dataset is not None:
        source = "<given>"
    elif dataset_path is not None:
        source = str(dataset_path)
        dataset = PreparedDataset.load(dataset_path)
    else:
        if data_dir is None:
            from bdgen.pipeline.workspace import Workspace

            data_dir = Workspace.find().data_dir
        ds_id = samples.model.get("dataset_id") or ""
        candidate = Path(data_dir) / f"{ds_id}.pt"
        if not candidate.is_file():
            raise BdgenError(f"{where}: dataset {ds_id or want[:12]} not found in {data_dir} "
                             f"(prepare it with `bdgen data prepare`, or pass --dataset PATH)")
        source = str(candidate)
        dataset = PreparedDataset.load(candidate)
    if dataset.dataset_hash != want:
        raise BdgenError(f"{where}: samples come from dataset {want[:12]} but {source} is "
                         f"dataset {dataset.dataset_hash[:12]}")
    return dataset, source


def _split_of(model: dict) -> tuple[int, tuple[float, float, float]]:
    split = model.get("split") or DEFAULT_SPLIT
    return int(split.get("seed", 42)), tuple(float(f) for f in split.get(
        "fractions", DEFAULT_SPLIT["fractions"]))  # type: ignore[return-value]


def reference_cache_path(cache_dir: str | os.PathLike, dataset_hash: str, seed: int,
                         fractions: Sequence[float]) -> Path:
    frac = "-".join(f"{f:g}" for f in fractions)
    return Path(cache_dir) / (f"reference-{dataset_hash[:16]}-s{seed}-f{frac}"
                              f"-e{EVALUATOR_VERSION}.pt")


def load_reference(dataset: PreparedDataset, seed: int = 42,
                   fractions: Sequence[float] = (0.8, 0.1, 0.1),
                   cache_dir: str | os.PathLike | None = None) -> tuple[ReferenceStats, bool]:
    """Reference statistics of the train split; from the cache when present.

    Returns ``(stats, from_cache)``. A damaged or outdated cache file is rebuilt.
    """
    path = (reference_cache_path(cache_dir, dataset.dataset_hash, seed, fractions)
            if cache_dir is not None else None)
    if path is not None and path.is_file():
        try:
            ref = ReferenceStats.from_dict(torch.load(path, map_location="cpu",
                                                      weights_only=True))
            if ref.meta.get("dataset_hash") == dataset.dataset_hash:
                return ref, True
        except Exception:  # noqa: BLE001 - any damage: rebuild below
            pass
    train = dataset.split("train", seed, (fractions[0], fractions[1], fractions[2]))
    meta = {"dataset_hash": dataset.dataset_hash, "dataset_id": dataset.dataset_id,
            "split_seed": seed, "fractions": list(fractions), "num_graphs": len(train)}
    ref = ReferenceStats.build(train.tokens.numpy(), train.pad_mask.numpy(), dataset.vocab,
                               meta)
    if path is not None:
        atomic_torch_save(ref.to_dict(), path)
    return ref, False


def _train_arrays(dataset: PreparedDataset, seed: int, fractions) -> GraphArrays:
    train = dataset.split("train", seed, tuple(fractions))
    return GraphArrays.from_tokens(train.tokens.numpy(), train.pad_mask.numpy(), dataset.vocab)


# --- denoising ------------------------------------------------------------------------------
def find_checkpoint(model: dict, model_path: str | os.PathLike | None,
                    models_dir: str | os.PathLike | None) -> Path | None:
    """The checkpoint file of ``model``: ``model_path`` (its sha256 must match) or the
    ``*.pt`` file below ``models_dir`` whose sha256 matches; None when not found."""
    want = model.get("sha256")
    candidates: list[Path] = []
    if model_path is not None:
        candidates = [Path(model_path)]
    elif models_dir is not None and Path(models_dir).is_dir():
        # Final checkpoints first; training runs name their directories freely.
        found = sorted(Path(models_dir).rglob("*.pt"))
        candidates = sorted(found, key=lambda p: p.name != "checkpoint_final.pt")
    for c in candidates:
        if c.is_file() and (want is None or file_sha256(c) == want):
            return c
    if model_path is not None:
        raise BdgenError(f"checkpoint {model_path} is not the model that made the samples "
                         f"(sha256 differs from {str(want)[:10]})")
    return None


V2_DUMMY_DENOISING_NOISE = {"type": "loglinear", "eps": 1e-3}
"""The dummy schedule the original evaluator masked v2 models with in the denoising metrics
(a bug kept reproducible on request; spec §6.11, §10 item 10)."""


def compute_denoising(checkpoint: Path, dataset: PreparedDataset,
                      v2_dummy_schedule: bool = False) -> dict[str, float]:
    """Denoising block of a checkpoint on the validation split of its dataset (seeded).

    v1 masks with the checkpoint's schedule; v2 with its learned per-position rates
    (``[B, S]`` α from the rate network). ``v2_dummy_schedule=True`` reproduces the original
    evaluator, which masked v2 models with a dummy log-linear schedule instead.
    """
    from bdgen.diffusion.process import ScheduleProcess, forward_process_of, has_learned_rates
    from bdgen.diffusion.schedules import make_schedule
    from bdgen.eval.denoising import denoising_metrics
    from bdgen.model.checkpoint import build_denoiser, load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model = build_denoiser(ckpt)
    if v2_dummy_schedule and has_learned_rates(ckpt):
        alpha_fn = ScheduleProcess(make_schedule(V2_DUMMY_DENOISING_NOISE)).alpha
    else:
        alpha_fn = forward_process_of(ckpt).alpha
    seed, fractions = _split_of({"split": ckpt.split})
    val = dataset.split("val", seed, fractions)
    return denoising_metrics(model, alpha_fn, val)


# --- the core -------------------------------------------------------------------------------
def evaluate_samples_files(
    paths: Iterable[str | os.PathLike],
    dataset: PreparedDataset | None = None,
    *,
    dataset_path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    denoising: bool | None = None,
    model_path: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
    errors: list[str] | None = None,
    v2_dummy_schedule_denoising: bool = False,
    constraints: ConstraintSet | None = None,
    progress: bool = False,
) -> list[EvaluationResult]:
    """Evaluate samples files (or directories of them), one result per (model, method).

    ``denoising``: True = required (error if the checkpoint is not found), None = when the
    checkpoint can be found (``model_path`` or ``models_dir/<model id>/*.pt``), False = off.
    ``v2_dummy_schedule_denoising``: mask v2 models with the original evaluator's dummy
    log-linear schedule instead of their learned rates (to reproduce old numbers; see
    :func:`compute_denoising`).
    ``constraints``: measure the ``constraint/*`` metrics (G7.2) against this set (for
    unguided baselines); without it a samples file's own set is used (guided runs), and a
    file without one gets none. A guided file is only measured against its own set.
    ``progress``: a bar / heartbeat over the files.
    A bad samples file is reported into ``errors`` (one line naming it) and skipped when
    ``errors`` is a list; otherwise its :class:`BdgenError` propagates.
    """
    def fail(msg: str) -> None:
        if errors is None:
            raise BdgenError(msg)
        errors.append(msg)

    files = find_samples_files(paths)
    if not files:
        raise BdgenError("no samples files to evaluate")
    datasets: dict[str, tuple[PreparedDataset, str]] = {}
    refs: dict[tuple, tuple[ReferenceStats, bool, float]] = {}
    groups: dict[tuple[str, str, str], dict] = {}
    for f in iterate(files, "evaluate", "file", enabled=progress):
        try:
            sf = load_samples(f)
            h = str(sf.model.get("dataset_hash", ""))
            if h not in datasets:
                datasets[h] = resolve_dataset(sf, str(f), dataset, dataset_path, data_dir)
            ds, ds_source = datasets[h]
            if ds.vocab.seq_len != sf.tokens.shape[1]:
                raise BdgenError(f"{f}: sequence length {sf.tokens.shape[1]} does not match "
                                 f"dataset n_max {ds.vocab.n_max}")
            cs = constraints_for(sf, constraints, str(f))
        except BdgenError as exc:
            fail(str(exc))
            continue
        seed, fractions = _split_of(sf.model)
        rkey = (h, seed, fractions)
        if rkey not in refs:
            t0 = time.perf_counter()
            ref, cached = load_reference(ds, seed, fractions, cache_dir)
            refs[rkey] = (ref, cached, time.perf_counter() - t0)
        ref = refs[rkey][0]
        # results are per (model, method, constraint set): never pooled across sets
        gkey = (str(sf.model.get("id")), sf.method, cs.identity if cs is not None else "")
        g = groups.setdefault(gkey, {"sf": sf, "per_seed": {}, "samples": [], "timings": {},
                                     "dataset": {"hash": ds.dataset_hash,
                                                 "id": ds.dataset_id, "path": ds_source},
                                     "rkey": rkey, "cs": cs})
        if str(sf.seed) in g["per_seed"]:
            fail(f"{f}: seed {sf.seed} of {gkey[0]}/{gkey[1]} was already evaluated from "
                 f"another file; skipped")
            continue
        t0 = time.perf_counter()
        metrics = evaluate_seed(
            sf.tokens.numpy(), sf.pad_mask.numpy(), ref, g["timings"],
            reference_graphs=functools.partial(_train_arrays, ds, seed, fractions))
        if cs is not None:
            t1 = time.perf_counter()
            ga = GraphArrays.from_tokens(sf.tokens.numpy(), sf.pad_mask.numpy(), ds.vocab)
            metrics.update(constraint_metrics(ga, cs))
            g["timings"]["constraints"] = (g["timings"].get("constraints", 0.0)
                                           + time.perf_counter() - t1)
        g["per_seed"][str(sf.seed)] = metrics
        g["timings"]["total"] = g["timings"].get("total", 0.0) + time.perf_counter() - t0
        g["samples"].append(SamplesInfo(str(f), file_sha256(f), int(sf.seed),
                                        int(sf.num_samples), int(sf.steps)))
        log.debug("evaluated %s (%s, seed %s)", f, gkey[1], sf.seed)

    denoise_cache: dict[str, dict[str, float]] = {}
    results = []
    for (mid, method, _), g in groups.items():
        first: SamplesFile = g["sf"]
        den: dict[str, float] = {}
        if denoising is not False:
            if mid not in denoise_cache:
                ckpt_path = find_checkpoint(first.model, model_path, models_dir)
                if ckpt_path is None:
                    if denoising:
                        raise BdgenError(f"denoising metrics need the checkpoint of model "
                                         f"{mid}: pass --model CKPT")
                    denoise_cache[mid] = {}
                else:
                    ds = datasets[g["dataset"]["hash"]][0]
                    denoise_cache[mid] = compute_denoising(
                        ckpt_path, ds, v2_dummy_schedule=v2_dummy_schedule_denoising)
            den = denoise_cache[mid]
        ref, cached, ref_s = refs[g["rkey"]]
        # Seeds in numeric order (file names sort "seed-1337" before "seed-42").
        per_seed = {s: g["per_seed"][s] for s in sorted(g["per_seed"], key=int)}
        g["samples"].sort(key=lambda s: s.seed)
        summary = aggregate_seeds(per_seed)
        composites = {}
        for name, (a, b) in COMPOSITES.items():
            ka, kb = f"eval/{a}", f"eval/{b}"
            if ka in summary and kb in summary:
                composites[name] = summary[ka].mean * summary[kb].mean
        timings = dict(g["timings"])
        timings["reference_s"] = ref_s
        timings["reference_cached"] = cached
        results.append(EvaluationResult(
            model_id=mid, method=method, method_config=dict(first.method_config),
            model=dict(first.model), per_seed=per_seed, summary=summary, composites=composites,
            denoising=den, samples=g["samples"], dataset=g["dataset"], timings=timings,
            constraints=None if g["cs"] is None else {**g["cs"].to_dict(),
                                                       "identity": g["cs"].identity}))
    return results


# --- outputs --------------------------------------------------------------------------------
def result_path(result: EvaluationResult, out_dir: str | os.PathLike | None,
                legacy: bool) -> Path:
    """``<dir>/<method>.json`` (legacy) or ``<dir>/<method>[.cs-<set id>].eval.json``;
    ``<dir>`` is the first samples file's directory, or ``out_dir/<model id>``."""
    base = (Path(out_dir) / result.model_id if out_dir is not None
            else Path(result.samples[0].path).parent)
    if legacy:
        return base / f"{result.method}.json"
    cs = result.constraint_set_id
    # one file per (method, constraint set): a baseline measured against two sets keeps both
    return base / (f"{result.method}.cs-{cs[:12]}.eval.json" if cs
                   else f"{result.method}.eval.json")


def write_result(result: EvaluationResult, out_dir: str | os.PathLike | None = None,
                 legacy: bool = False) -> Path:
    """Write one result atomically; returns its path."""
    path = result_path(result, out_dir, legacy)
    if legacy:
        write_results_json(path, result.results_document())
        return path
    atomic_write_json(path, result.to_json(), indent=2, default=_json_default)
    return path


def _json_default(o):
    if isinstance(o, (np.generic,)):
        return o.item()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


HEADLINE = ("eval/validity_rate", "eval/inside_validity", "eval/novelty",
            "eval/mode_coverage_weighted", "eval/node_tv", "eval/edge_tv",
            "eval/conditional_edge_tv_weighted", "eval/transitivity_score")


def summary_rows(results: Sequence[EvaluationResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the terminal summary: headline metrics, mean ± std."""
    sat = "constraint/satisfaction_overall"
    guided = any(r.constraints is not None for r in results)
    header = ["model", "method", "seeds"] + [canonical_name(k) for k in HEADLINE] + [
        "novelty x mc_w"] + (["satisfaction (all)", "constraint set"] if guided else [])
    rows = []
    for r in results:
        row = [r.model_id, r.method, str(len(r.per_seed))]
        for k in HEADLINE + ((sat,) if guided else ()):
            a = r.summary.get(k)
            row.append("-" if a is None else f"{a.mean:.4f} ± {a.std:.4f}")
            if k == HEADLINE[-1]:
                comp = r.composites.get("novelty_x_mode_coverage_weighted")
                row.append("-" if comp is None else f"{comp:.4f}")
        if guided:
            row.append((r.constraint_set_id or "-")[:12])
        rows.append(row)
    return header, rows
