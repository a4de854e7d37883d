"""Tracked jobs: each train / generate / evaluate is ONE MLflow run + store rows + DVC-tracked
artifacts, wired around the science functions of the other pipeline modules.

Order inside every job (so failures leave nothing half-registered):

1. the tracker is opened (an unreachable MLflow server fails here, before any store row);
2. the MLflow run is opened with all config as params;
3. the store row is claimed (generation) with the MLflow run id on it;
4. the science runs and writes its file atomically (temp file + ``os.replace``);
5. the file is ``dvc add``-ed; md5/sha256 go on the MLflow run (tags) and the sha256 and
   path on the store row, which is marked succeeded last;
6. the MLflow run is tagged with the store row ids and closed.

A job killed anywhere before (5) leaves at most a ``running`` store row without a samples
path (taken over by the next attempt) and a FAILED/RUNNING MLflow run; never a registered
file that is not complete.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bdgen.errors import BdgenError
from bdgen.pipeline.workspace import Workspace
from bdgen.tracking import NullTracker, Tracker, dvc_file, experiment_name, file_digests, track
from bdgen.util.atomic import atomic_write_json

if TYPE_CHECKING:
    from bdgen.eval.aggregate import MethodResult
    from bdgen.report.expectations import Verdict


def tracker_for(workspace: Workspace | None, no_mlflow: bool = False) -> Tracker:
    """The tracker a job uses: nothing with ``--no-mlflow``; ``$MLFLOW_TRACKING_URI`` if set;
    else the workspace's SQLite store. Checks reachability now (fails fast)."""
    if no_mlflow:
        return NullTracker()
    if workspace is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise BdgenError("no MLflow tracking store: run inside a bdgen workspace (bdgen init), "
                         "set MLFLOW_TRACKING_URI, or use --no-mlflow")
    root = workspace.root if workspace is not None else Path.cwd()
    return Tracker.for_workspace(root)


@dataclass
class GenerationRecord:
    """What a tracked generation produced (or found already done)."""

    model_id: str
    method: str
    seed: int
    num_samples: int
    steps: int
    generation_run_id: int
    mlflow_run_id: str | None
    path: str               # relative to the workspace root (DVC-tracked)
    md5: str
    sha256: str
    skipped: bool = False   # already in the store, nothing done


def open_store(ws: Workspace):
    """The results store: ``$BDGEN_DB_URL`` if set, else the workspace's ``bdgen.db``."""
    from bdgen.store.api import Store

    return Store.open(os.environ.get("BDGEN_DB_URL") or str(ws.db_path))


def register_checkpoint(store, ckpt, path: Path, sha256: str, mid: str,
                        mlflow_run_id: str | None = None) -> None:
    """Dataset and model rows for a checkpoint (idempotent): generation needs them."""
    source = ckpt.dataset_id.split("-", 1)[0]
    store.get_or_create_dataset(ckpt.dataset_id, source, ckpt.dataset_hash,
                                split_seed=ckpt.split.get("seed"),
                                split_fractions=ckpt.split.get("fractions"))
    store.get_or_create_model(mid, ckpt.version, ckpt.noise_type,
                              model_config=ckpt.model_config, train_config=ckpt.train_config,
                              dataset_id=ckpt.dataset_id, checkpoint_path=str(path),
                              checkpoint_sha256=sha256, mlflow_run_id=mlflow_run_id)


def resolve_model(ws: Workspace, ref: str | Path) -> tuple[Path, str | None]:
    """A checkpoint file, or the model id the store recorded for one (``v1-loglinear-
    3fa9c0d2e1``, as ``bdgen leaderboard`` shows it): ``(path, expected sha256 or None)``.

    Why ids: after ``dvc pull`` on another machine researchers know a model by its id, not
    by the run directory its checkpoint happens to live in.
    """
    import difflib

    path = Path(ref)
    if path.is_file() or path.suffix == ".pt" or len(path.parts) > 1:
        return path, None  # a path: load_checkpoint names a missing or bad file
    store = open_store(ws)
    try:
        found = store.model_checkpoint(str(ref))
        known = [] if found is not None else store.model_ids()
    finally:
        store.close()
    if found is None:
        close = difflib.get_close_matches(str(ref), known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else (
            f"; the store has {len(known)} model(s)" if known else "; the store has no models")
        raise BdgenError(f"model {str(ref)!r} is neither a checkpoint file nor a model id in "
                         f"the store{hint}")
    stored_path, sha = found
    if not stored_path:
        raise BdgenError(f"model {ref}: the store has no checkpoint for it (imported results?)")
    ckpt = Path(stored_path) if Path(stored_path).is_absolute() else ws.root / stored_path
    if not ckpt.is_file():
        raise BdgenError(f"model {ref}: its checkpoint {stored_path} is missing "
                         "(run `dvc pull` for it?)")
    return ckpt, sha


def _rel(ws: Workspace, path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(ws.root).as_posix()
    except ValueError:
        return str(path)


def _existing_generation(store, ws: Workspace, mid: str, method: str, seed: int, n: int,
                         steps: int) -> GenerationRecord | None:
    from bdgen.store.links import generation_row

    row = generation_row(store, mid, method, seed, n, steps)
    if row is None or row["status"] != "succeeded" or not row["samples_path"]:
        return None
    path = ws.root / row["samples_path"]
    md5 = ""
    dvc = dvc_file(path)
    if dvc.exists():
        import yaml

        md5 = yaml.safe_load(dvc.read_text())["outs"][0]["md5"]
    return GenerationRecord(mid, method, seed, n, steps, row["id"], row["mlflow_run_id"],
                            row["samples_path"], md5, row["samples_sha256"], skipped=True)


def tracked_generate(ws: Workspace, model_path: str | Path, methods: Sequence[str],
                     seeds: Sequence[int], num_samples: int = 1000, steps: int = 100, *,
                     batch_size: int | None = None, device: str = "auto",
                     no_mlflow: bool = False, force: bool = False, claim: bool = False,
                     echo: Callable[[str], None] | None = print,
                     renders: int = 6) -> list[GenerationRecord]:
    """Generate every (method, seed) as one tracked run each (see module docstring).

    ``model_path``: a checkpoint file or a model id the store has (:func:`resolve_model`).

    Runs the store already has (succeeded) are skipped unless ``force``. With ``claim``
    (sweeps) a run another process is doing is skipped too: the row is claimed atomically.
    """
    from bdgen.model.checkpoint import load_checkpoint, model_id
    from bdgen.pipeline.generate import resolve_methods
    from bdgen.store.links import claim_generation_run

    tracker = tracker_for(ws, no_mlflow)  # unreachable MLflow fails here: nothing written
    for name, v in (("--steps", steps), ("--num-samples", num_samples)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise BdgenError(f"{name} must be an integer >= 1, got {v!r}")
    model_path, expected_sha = resolve_model(ws, model_path)
    if expected_sha and model_path.is_file():
        sha = file_digests(model_path)[1]
        if sha != expected_sha:
            raise BdgenError(f"checkpoint {model_path} has changed since the store recorded "
                             f"it (sha256 {sha[:10]}, recorded {expected_sha[:10]})")
    ckpt = load_checkpoint(model_path)
    parsed = [m.format() for m in resolve_methods(list(methods), ckpt)]
    sha = file_digests(model_path)[1]
    mid = model_id(ckpt, sha)
    experiment = experiment_name(ckpt.dataset_id)
    store = open_store(ws)
    records: list[GenerationRecord] = []
    try:
        register_checkpoint(store, ckpt, Path(_rel(ws, model_path)), sha, mid)
        for method in parsed:
            for seed in seeds:
                seed = int(seed)
                done = None if force else _existing_generation(store, ws, mid, method, seed,
                                                               num_samples, steps)
                if done is not None:
                    if echo:
                        echo(f"{method} seed {seed}: already done (generation run "
                             f"{done.generation_run_id}), skipped")
                    records.append(done)
                    continue
                if claim:
                    row_id = claim_generation_run(store, mid, method, seed, num_samples, steps,
                                                  no_mlflow=no_mlflow)
                    if row_id is None:
                        if echo:
                            echo(f"{method} seed {seed}: taken by another process, skipped")
                        continue
                else:
                    row_id = store.start_generation_run(mid, method, seed, num_samples, steps,
                                                        no_mlflow=no_mlflow, force=force)
                records.append(_generate_one(
                    ws, store, tracker, ckpt, model_path, sha, experiment, method, seed,
                    num_samples, steps, row_id, batch_size, device, echo, renders))
    finally:
        store.close()
    return records


def _generate_one(ws: Workspace, store, tracker: Tracker, ckpt, model_path: Path, sha: str,
                  experiment: str, method: str, seed: int, num_samples: int, steps: int,
                  row_id: int, batch_size: int | None, device: str,
                  echo: Callable[[str], None] | None, renders: int) -> GenerationRecord:
    """One (method, seed): MLflow run, sampling, DVC, then the row is marked succeeded."""
    from bdgen.diffusion.method import Method
    from bdgen.model.checkpoint import model_id
    from bdgen.pipeline.generate import generate
    from bdgen.store.links import link_mlflow_run

    mid = model_id(ckpt, sha)

    spec = Method.parse(method)
    params = {"model_id": mid, "method": method, "seed": seed, "num_samples": num_samples,
              "steps": steps, "batch_size": batch_size, "device": device,
              "method_fields": spec.fields(), "method_config": spec.legacy_config(),
              "checkpoint": {"path": _rel(ws, model_path), "sha256": sha,
                             "version": ckpt.version, "noise": ckpt.noise},
              "dataset_id": ckpt.dataset_id}
    tags = {"bdgen.model_id": mid, "bdgen.method": method, "bdgen.seed": seed,
            "bdgen.dataset_id": ckpt.dataset_id, "bdgen.generation_run_id": row_id,
            "bdgen.num_samples": num_samples, "bdgen.steps": steps,
            "bdgen.artifact.checkpoint.sha256": sha}
    start = time.perf_counter()
    try:
        with tracker.open_run("generate", f"{mid}/{method}/{seed}", experiment, params,
                              tags) as run:
            if run.run_id is not None:
                link_mlflow_run(store, "generation", row_id, run.run_id)
            (res,) = generate(model_path, [method], [seed], num_samples=num_samples,
                              steps=steps, batch_size=batch_size, device=device,
                              workspace=ws, echo=echo, progress=False)
            ref = track(ws.root, res.path)
            if ref.sha256 != res.sha256:
                raise BdgenError(f"{res.path} changed while being registered "
                                 f"(sha256 {ref.sha256[:12]} != {res.sha256[:12]})")
            run.set_tags(ref.tags("samples"))
            run.log_metrics({"gen/wall_s": res.wall_s, "gen/samples_per_s": res.samples_per_s,
                             "gen/model_calls": res.model_calls})
            if renders and tracker.enabled:
                _log_renders(run, ws, res.path, f"{method} seed {seed}", renders)
            store.finish_generation_run(row_id, ref.sha256, ref.path,
                                        mlflow_run_id=run.run_id,
                                        duration_s=time.perf_counter() - start)
    except BaseException as exc:
        store.fail_run(row_id, f"{type(exc).__name__}: {exc}")
        raise
    return GenerationRecord(mid, method, seed, num_samples, steps, row_id, run.run_id,
                            ref.path, ref.md5, ref.sha256)


def _log_renders(run, ws: Workspace, samples: Path, title: str, n: int) -> None:
    """A few generated bubble diagrams as a PNG on the MLflow run."""
    import tempfile

    from bdgen.data.graph import detokenize
    from bdgen.data.samples_file import load_samples
    from bdgen.data.vocab import VocabConfig
    from bdgen.pipeline.plots import render_bubbles

    sf = load_samples(samples)
    vocab = VocabConfig(int(sf.model["n_max"]))
    graphs = [detokenize(sf.tokens[i].numpy(), sf.pad_mask[i].numpy(), vocab)
              for i in range(min(n, sf.tokens.shape[0]))]
    with tempfile.TemporaryDirectory(dir=ws.cache_dir if ws.cache_dir.is_dir() else None) as d:
        run.log_artifact(render_bubbles(graphs, Path(d) / "samples.png", title), "plots")


@dataclass
class TrainRecord:
    model_id: str
    checkpoint: str          # relative to the workspace root (DVC-tracked)
    md5: str
    sha256: str
    mlflow_run_id: str | None
    dataset_id: str
    step: int
    final_loss: float


def tracked_train(ws: Workspace, dataset_path: str | Path, *, noise: str = "loglinear",
                  model: str = "small", config=None, out_dir: str | Path | None = None,
                  resume: bool = False, device: str = "auto", progress: bool = True,
                  no_mlflow: bool = False, reuse: bool = False) -> TrainRecord:
    """Train one model as one tracked run: config as params, validation curve as metric
    series, final checkpoint DVC-tracked, dataset + model rows in the store.

    ``reuse`` (pipelines): a run directory of the same identity that already holds the
    final checkpoint at ``config.steps`` is reused as is (no new run); one with fewer steps
    is resumed."""
    from bdgen.data.dataset import PreparedDataset
    from bdgen.diffusion.trainer import TrainConfig
    from bdgen.model.checkpoint import load_checkpoint, model_id
    from bdgen.pipeline.train import train_model
    from bdgen.store.links import link_model_run

    tracker = tracker_for(ws, no_mlflow)
    config = config or TrainConfig()
    ds = PreparedDataset.load(dataset_path)
    params = {"dataset": {"id": ds.dataset_id, "path": _rel(ws, Path(dataset_path)),
                          "source": ds.source, "hash": ds.dataset_hash},
              "noise": noise, "model": model, "device": device, "resume": resume,
              "train": config.to_dict()}
    tags = {"bdgen.dataset_id": ds.dataset_id, "bdgen.noise": noise, "bdgen.model_preset": model}
    with tracker.open_run("train", f"{noise}-{model}", experiment_name(ds.dataset_id), params,
                          tags) as run:
        if _inside(ws, Path(dataset_path)):
            run.set_tags(track(ws.root, dataset_path).tags("dataset"))
        if out_dir is None:  # the identity-derived run directory of *this* workspace
            from bdgen.model.denoiser import model_preset
            from bdgen.pipeline.train import SPLIT_FRACTIONS, SPLIT_SEED, noise_config, run_name

            split = {"seed": SPLIT_SEED, "fractions": list(SPLIT_FRACTIONS)}
            out_dir = ws.model_dir(run_name(noise_config(noise), ds.dataset_hash,
                                            model_preset(model).to_dict(), config, split))
        if reuse:
            done = _reusable(Path(out_dir), config.steps)
            if done is True:
                return _reuse_checkpoint(ws, tracker, Path(out_dir), ds.dataset_id, run)
            resume = resume or done is False
        out = train_model(dataset_path, noise=noise, model=model, config=config, out_dir=out_dir,
                       resume=resume, device=device, progress=progress)
        ref = track(ws.root, out.checkpoint)
        ckpt = load_checkpoint(out.checkpoint)
        mid = model_id(ckpt, ref.sha256)
        run.set_tags({"bdgen.model_id": mid, "bdgen.run_dir": _rel(ws, out.run_dir),
                      **ref.tags("checkpoint")})
        metrics = {"train/final_loss": out.final_loss, "train/steps_per_s": out.steps_per_s,
                   "train/wall_s": out.wall_s, "train/step": out.step}
        if out.val is not None:
            metrics.update({"val/loss": out.val.loss, "val/node_accuracy": out.val.node_accuracy,
                            "val/edge_accuracy": out.val.edge_accuracy})
        run.log_metrics(metrics, step=out.step)
        _log_val_curve(run, out.run_dir / "train_log.jsonl")
        store = open_store(ws)
        try:
            register_checkpoint(store, ckpt, Path(ref.path), ref.sha256, mid, run.run_id)
            if run.run_id is not None:
                link_model_run(store, mid, run.run_id)
        finally:
            store.close()
    return TrainRecord(mid, ref.path, ref.md5, ref.sha256, run.run_id, ds.dataset_id, out.step,
                       out.final_loss)


def _reusable(run_dir: Path, steps: int) -> bool | None:
    """True: the final checkpoint at ``steps`` is there; False: resumable checkpoints with
    fewer steps; None: nothing there."""
    from bdgen.model.checkpoint import load_checkpoint
    from bdgen.pipeline.train import FINAL_NAME, latest_checkpoint

    latest = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    if latest is None:
        return None
    step = load_checkpoint(latest).step
    if latest.name == FINAL_NAME and step == steps:
        return True
    if step > steps:
        raise BdgenError(f"{run_dir} holds a model trained for {step} steps, more than the "
                         f"{steps} asked for; remove it or raise the step count")
    return False


def _reuse_checkpoint(ws: Workspace, tracker: Tracker, run_dir: Path, dataset_id: str,
                      run) -> TrainRecord:
    """An already trained model: re-register (idempotent), point at its original run."""
    from bdgen.model.checkpoint import load_checkpoint, model_id
    from bdgen.pipeline.train import FINAL_NAME

    final = run_dir / FINAL_NAME
    ref = track(ws.root, final)
    ckpt = load_checkpoint(final)
    mid = model_id(ckpt, ref.sha256)
    found = tracker.find_runs(experiment_name(dataset_id),
                              {"bdgen.kind": "train", "bdgen.model_id": mid})
    original = found[-1] if found else None
    run.set_tags({"bdgen.model_id": mid, "bdgen.reused_from_run": original, **ref.tags(
        "checkpoint")})
    store = open_store(ws)
    try:
        register_checkpoint(store, ckpt, Path(ref.path), ref.sha256, mid, original)
    finally:
        store.close()
    return TrainRecord(mid, ref.path, ref.md5, ref.sha256, original or run.run_id, dataset_id,
                       ckpt.step, float("nan"))


def _inside(ws: Workspace, path: Path) -> bool:
    try:
        Path(path).resolve().relative_to(ws.root)
        return True
    except ValueError:
        return False


def _log_val_curve(run, log: Path) -> None:
    """The training-loss and validation curves (``train_log.jsonl``) as metric series."""
    import json

    if not log.exists():
        return
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    for key in ("train_loss", "lr", "gumbel_temp", "val_loss", "val_node_accuracy",
                "val_edge_accuracy"):
        # A resumed run appends to the log: keep the last value logged for each step.
        series = sorted({int(r["step"]): float(r[key]) for r in rows if key in r}.items())
        if series:
            run.log_metric_series(f"curve/{key}", series)


#: Headline metrics written to the per-evaluation metrics JSON (``dvc exp show``/``metrics``).
HEADLINE_METRICS = ("validity_rate", "inside_validity", "novelty", "mode_coverage_weighted",
                    "node_tv", "edge_tv", "conditional_edge_tv_weighted", "transitivity_score")


@dataclass
class EvaluationRecord:
    generation_run_id: int
    evaluation_run_id: int
    mlflow_run_id: str | None
    model_id: str
    method: str
    seed: int
    samples_sha256: str
    metrics: dict[str, float]     # canonical name -> value (this seed)
    skipped: bool = False


def verify_samples(ws: Workspace, info: dict) -> Path:
    """The samples file of a generation row, after checking its sha256 against the store.

    Called before any metric is computed: a file changed or replaced since it was generated
    is refused (its metrics would describe other samples than the store says)."""
    if info["status"] != "succeeded" or not info["samples_path"]:
        raise BdgenError(f"generation run {info['id']} has status {info['status']} and no "
                         "samples file to evaluate")
    path = Path(info["samples_path"])
    path = path if path.is_absolute() else ws.root / path
    if not path.is_file():
        raise BdgenError(f"samples file of generation run {info['id']} is missing: {path} "
                         "(restore it with `dvc pull` / `dvc checkout` in the workspace)")
    sha = file_digests(path)[1]
    if sha != info["samples_sha256"]:
        raise BdgenError(f"samples file {path} does not match the store: sha256 "
                         f"{sha[:12]}... but generation run {info['id']} recorded "
                         f"{str(info['samples_sha256'])[:12]}...; refusing to evaluate")
    return path


def tracked_evaluate(ws: Workspace, run_ids: Sequence[int], *, no_mlflow: bool = False,
                     replace: bool = False, echo: Callable[[str], None] | None = print,
                     metrics_out: dict[int, Path] | None = None,
                     plots: bool = True) -> list[EvaluationRecord]:
    """Evaluate generation runs, one tracked evaluation run each.

    Every samples file is verified against the store's sha256 before anything is computed.
    Runs already evaluated (same reference and evaluator version) are skipped unless
    ``replace``. ``metrics_out`` maps a generation run id to a JSON file receiving its
    headline metrics (for DVC).
    """
    from bdgen.store.api import DEFAULT_EVALUATOR_VERSION, DEFAULT_REFERENCE
    from bdgen.store.links import (
        evaluation_metrics,
        evaluation_row,
        generation_run_info,
    )

    tracker = tracker_for(ws, no_mlflow)
    store = open_store(ws)
    records: list[EvaluationRecord] = []
    try:
        infos = [generation_run_info(store, int(r)) for r in run_ids]
        paths = [verify_samples(ws, info) for info in infos]  # all checked before any work
        for info, path in zip(infos, paths):
            prev = evaluation_row(store, info["id"], DEFAULT_REFERENCE,
                                  DEFAULT_EVALUATOR_VERSION)
            if prev is not None and prev["status"] == "succeeded" and not replace:
                if echo:
                    echo(f"generation run {info['id']}: already evaluated (evaluation run "
                         f"{prev['id']}), skipped")
                rec = EvaluationRecord(info["id"], prev["id"], prev["mlflow_run_id"],
                                       info["model_id"], info["method"], info["seed"],
                                       info["samples_sha256"],
                                       evaluation_metrics(store, prev["id"]), skipped=True)
            else:
                rec = _evaluate_one(ws, store, tracker, info, path, replace, echo, plots)
            records.append(rec)
            _denoise_model_once(ws, store, tracker, info["model_id"], echo)
            if metrics_out and info["id"] in metrics_out:
                _write_json(metrics_out[info["id"]],
                            {k: rec.metrics[k] for k in HEADLINE_METRICS if k in rec.metrics})
    finally:
        store.close()
    return records


def _denoise_model_once(ws: Workspace, store, tracker: Tracker, model_id: str,
                        echo: Callable[[str], None] | None) -> None:
    """Seeded denoising metrics of a model (spec §6.11), computed once per model and stored
    at model level (they do not depend on the sampling method), in their own MLflow run."""
    from bdgen.data.dataset import PreparedDataset
    from bdgen.eval.registry import lookup
    from bdgen.model.checkpoint import load_checkpoint
    from bdgen.pipeline.evaluate import compute_denoising
    from bdgen.store.links import model_needing_denoising

    todo = model_needing_denoising(store, model_id)
    if todo is None:
        return
    rel, sha = todo
    path = ws.root / rel
    if not path.exists() or file_digests(path)[1] != sha:
        raise BdgenError(f"checkpoint {rel} of model {model_id} is missing or does not match "
                         "the store's sha256; cannot compute its denoising metrics")
    ckpt = load_checkpoint(path)
    dataset = PreparedDataset.load(ws.dataset_path(ckpt.dataset_id))
    t0 = time.perf_counter()
    computed = compute_denoising(path, dataset)
    # A t at which no real position was masked (e.g. a learned v2 rate that keeps almost
    # everything at t = 0.1) has no defined accuracy/CE: record only the defined values.
    metrics = {k: v for k, v in computed.items() if math.isfinite(v)}
    with tracker.open_run("denoising", f"{model_id}/denoising", experiment_name(ckpt.dataset_id),
                          {"model_id": model_id, "checkpoint_sha256": sha},
                          {"bdgen.model_id": model_id}) as run:
        store.record_denoising(model_id, metrics, mlflow_run_id=run.run_id,
                               no_mlflow=not tracker.enabled,
                               duration_s=time.perf_counter() - t0)
        run.log_metrics({lookup(k).name: v for k, v in metrics.items()})
    if echo:
        undefined = len(computed) - len(metrics)
        echo(f"{model_id}: denoising metrics recorded ({len(metrics)} values"
             + (f", {undefined} undefined: nothing masked" if undefined else "")
             + f", {time.perf_counter() - t0:.1f} s)")


def _evaluate_one(ws: Workspace, store, tracker: Tracker, info: dict, path: Path,
                  replace: bool, echo: Callable[[str], None] | None,
                  plots: bool) -> EvaluationRecord:
    """One generation run: metrics computed, then MLflow run + evaluation row together."""
    from datetime import datetime, timezone

    from bdgen.pipeline.evaluate import evaluate_samples_files
    from bdgen.store.api import normalise_metrics

    rel = _rel(ws, path)
    md5, sha = file_digests(path)
    gen_id = info["id"]
    name = f"{info['model_id']}/{info['method']}/{info['seed']}"
    params = {"generation_run_id": gen_id, "model_id": info["model_id"],
              "method": info["method"], "seed": info["seed"],
              "num_samples": info["num_samples"], "steps": info["steps"],
              "samples": {"path": rel, "sha256": sha}}
    tags = {"bdgen.generation_run_id": gen_id, "bdgen.model_id": info["model_id"],
            "bdgen.method": info["method"], "bdgen.seed": info["seed"],
            "bdgen.generation_mlflow_run_id": info["mlflow_run_id"],
            "bdgen.artifact.samples.path": rel, "bdgen.artifact.samples.md5": md5,
            "bdgen.artifact.samples.sha256": sha}
    started = datetime.now(timezone.utc).replace(tzinfo=None)
    t0 = time.perf_counter()
    (result,) = evaluate_samples_files([path], data_dir=ws.data_dir, cache_dir=ws.cache_dir,
                                       denoising=False)
    per_seed = result.per_seed[str(info["seed"])]
    clean = normalise_metrics(per_seed)
    dataset_id = result.dataset.get("id") or result.model.get("dataset_id", "unknown")
    with tracker.open_run("evaluate", name, experiment_name(dataset_id), params,
                          {**tags, "bdgen.dataset_id": dataset_id}) as run:
        ev_id = store.record_evaluation(gen_id, per_seed, mlflow_run_id=run.run_id,
                                        no_mlflow=not tracker.enabled, started_at=started,
                                        duration_s=time.perf_counter() - t0, replace=replace)
        run.set_tags({"bdgen.evaluation_run_id": ev_id})
        run.log_metrics({**clean, "eval_time_s": time.perf_counter() - t0})
        if plots and tracker.enabled:
            import tempfile

            from bdgen.pipeline.plots import metric_bars

            with tempfile.TemporaryDirectory() as d:
                bars = {k: clean[k] for k in HEADLINE_METRICS if k in clean}
                run.log_artifact(metric_bars(bars, Path(d) / "headline.png", name), "plots")
    if echo:
        shown = ", ".join(f"{k} {clean[k]:.3f}" for k in HEADLINE_METRICS[:4] if k in clean)
        echo(f"{name}: evaluation run {ev_id} ({shown})")
    return EvaluationRecord(gen_id, ev_id, run.run_id, info["model_id"], info["method"],
                            info["seed"], sha, clean)


def _write_json(path: Path, obj) -> None:
    atomic_write_json(path, obj, indent=2, sort_keys=True)


def verify_registered_files(ws: Workspace, paths: Sequence[str | Path]) -> int:
    """Check every samples file (or directory of them) that the store knows against its
    recorded sha256, before evaluating; BdgenError on a mismatch. Returns how many were
    checked (files the store does not know are left alone)."""
    from bdgen.pipeline.evaluate import find_samples_files
    from bdgen.store.links import generation_run_info, generation_runs_by_path

    files = {_rel(ws, f): f for f in find_samples_files(paths)}
    store = open_store(ws)
    try:
        known = generation_runs_by_path(store, list(files))
        for run_id in known.values():
            verify_samples(ws, generation_run_info(store, run_id))
    finally:
        store.close()
    return len(known)


def pending_runs(ws: Workspace, model_id: str | None = None) -> list[int]:
    """Generation runs (succeeded, made by bdgen) not evaluated yet."""
    from bdgen.store.api import DEFAULT_EVALUATOR_VERSION, DEFAULT_REFERENCE
    from bdgen.store.links import pending_generation_runs

    store = open_store(ws)
    try:
        return pending_generation_runs(store, DEFAULT_REFERENCE, DEFAULT_EVALUATOR_VERSION,
                                       model_id)
    finally:
        store.close()


def record_verdicts(judged: Sequence[tuple[MethodResult, Mapping[str, Verdict]]],
                    expectations: str, no_mlflow: bool = False) -> int:
    """Tag every evaluation MLflow run behind each judged result with its verdicts.

    Tags are ``bdgen.verdict.<expectations>.<metric> = pass|in-range|miss|fail|missing``, so
    the MLflow UI can filter runs by verdict. Returns the number of runs tagged; with
    ``--no-mlflow`` or no tracking store reachable from here (no workspace, no
    ``$MLFLOW_TRACKING_URI``) nothing is tagged and 0 is returned.
    """
    run_ids = [rid for result, _ in judged for rid in result.mlflow_run_ids.values() if rid]
    if no_mlflow or not run_ids:
        return 0
    try:
        ws: Workspace | None = Workspace.find()
    except BdgenError:
        ws = None
    if ws is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        return 0
    tracker = tracker_for(ws)
    tagged = 0
    for result, verdicts in judged:
        ids = [rid for rid in result.mlflow_run_ids.values() if rid]
        tracker.tag_runs(ids, {f"bdgen.verdict.{expectations}.{metric}": v.verdict
                               for metric, v in verdicts.items()})
        tagged += len(ids)
    return tagged
