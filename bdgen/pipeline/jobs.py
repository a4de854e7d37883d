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

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bdgen.errors import BdgenError
from bdgen.pipeline.workspace import Workspace
from bdgen.tracking import NullTracker, Tracker, dvc_file, experiment_name, file_digests, track


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


def _rel(ws: Workspace, path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(ws.root).as_posix()
    except ValueError:
        return str(path)


def _existing_generation(store, ws: Workspace, mid: str, method: str, seed: int, n: int,
                         steps: int) -> GenerationRecord | None:
    from bdgen.pipeline.store_links import generation_row

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

    Runs the store already has (succeeded) are skipped unless ``force``. With ``claim``
    (sweeps) a run another process is doing is skipped too: the row is claimed atomically.
    """
    from bdgen.model.checkpoint import load_checkpoint, model_id
    from bdgen.pipeline.generate import generate, resolve_methods
    from bdgen.pipeline.store_links import claim_generation_run, link_mlflow_run

    tracker = tracker_for(ws, no_mlflow)  # unreachable MLflow fails here: nothing written
    for name, v in (("--steps", steps), ("--num-samples", num_samples)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise BdgenError(f"{name} must be an integer >= 1, got {v!r}")
    model_path = Path(model_path)
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
                    ws, store, tracker, generate, link_mlflow_run, ckpt, model_path, sha, mid,
                    experiment, method, seed, num_samples, steps, row_id, batch_size, device,
                    echo, renders))
    finally:
        store.close()
    return records


def _generate_one(ws, store, tracker, generate, link_mlflow_run, ckpt, model_path, sha, mid,
                  experiment, method, seed, num_samples, steps, row_id, batch_size, device,
                  echo, renders) -> GenerationRecord:
    from bdgen.diffusion.method import Method

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
                  no_mlflow: bool = False) -> TrainRecord:
    """Train one model as one tracked run: config as params, validation curve as metric
    series, final checkpoint DVC-tracked, dataset + model rows in the store."""
    from bdgen.data.dataset import PreparedDataset
    from bdgen.diffusion.trainer import TrainConfig
    from bdgen.model.checkpoint import load_checkpoint, model_id
    from bdgen.pipeline.store_links import link_model_run
    from bdgen.pipeline.train import train_v1

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
        out = train_v1(dataset_path, noise=noise, model=model, config=config, out_dir=out_dir,
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


def _inside(ws: Workspace, path: Path) -> bool:
    try:
        Path(path).resolve().relative_to(ws.root)
        return True
    except ValueError:
        return False


def _log_val_curve(run, log: Path) -> None:
    """The validation curve (``train_log.jsonl``, one line per validation) as metric series."""
    import json

    if not log.exists():
        return
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    for key in ("val_loss", "val_node_accuracy", "val_edge_accuracy"):
        series = [(int(r["step"]), float(r[key])) for r in rows if key in r]
        if series:
            run.log_metric_series(f"curve/{key}", series)
