"""The tracked generation job: every (method, seed) of a model as one MLflow run, one
generation row in the store and one DVC-tracked samples file (order: :mod:`.context`)."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from bdgen.data.graph import detokenize
from bdgen.data.samples_file import load_samples
from bdgen.data.vocab import VocabConfig
from bdgen.diffusion.method import Method
from bdgen.errors import BdgenError
from bdgen.pipeline.checkpoints import checkpoint_sha256, register_checkpoint, resolve_model
from bdgen.pipeline.context import JobContext
from bdgen.pipeline.generate import (
    GenerationSetup,
    prepare_generation,
    sample_to_file,
    samples_path,
)
from bdgen.pipeline.plots import render_bubbles
from bdgen.pipeline.workspace import Workspace
from bdgen.tracking import TrackedRun, dvc_file, experiment_name, track

log = logging.getLogger(__name__)


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


def tracked_generate(ws: Workspace, model_path: str | Path, methods: Sequence[str],
                     seeds: Sequence[int], num_samples: int = 1000, steps: int = 100, *,
                     batch_size: int | None = None, device: str = "auto",
                     no_mlflow: bool = False, force: bool = False, claim: bool = False,
                     renders: int = 6,
                     out_dir: str | Path | None = None) -> list[GenerationRecord]:
    """Generate every (method, seed) as one tracked run each.

    ``model_path``: a checkpoint file or a model id the store has
    (:func:`~bdgen.pipeline.checkpoints.resolve_model`). ``out_dir`` (inside the workspace):
    write the samples files below it instead of the workspace's own layout.

    Runs the store already has (succeeded) are skipped unless ``force``. With ``claim``
    (sweeps) a run another process is doing is skipped too: the row is claimed atomically.
    """
    with JobContext.open(ws, no_mlflow) as ctx:
        path, recorded = resolve_model(ws, ctx.store, model_path)
        sha = checkpoint_sha256(path, recorded) if path.is_file() else None
        setup = prepare_generation(path, methods, seeds, num_samples, steps, batch_size,
                                   device, sha256=sha)
        register_checkpoint(ctx.store, setup.ckpt, ctx.rel(path), setup.sha256, setup.model_id)
        root: Workspace | Path = Path(out_dir) if out_dir is not None else ws
        records: list[GenerationRecord] = []
        bar = ctx.progress(len(setup.methods) * len(seeds), "generate", "run")
        for method in setup.methods:
            name = method.format()
            for seed in map(int, seeds):
                bar.update_to(bar.done + 1, f"{name} seed {seed}")  # counts runs started
                done = None if force else _existing(ctx, setup.model_id, name, seed,
                                                    num_samples, steps)
                if done is not None:
                    log.info("%s seed %s: already done (generation run %s), skipped", name,
                             seed, done.generation_run_id)
                    records.append(done)
                    continue
                if claim:
                    row_id = ctx.store.claim_generation_run(setup.model_id, name, seed,
                                                            num_samples, steps,
                                                            no_mlflow=no_mlflow)
                    if row_id is None:
                        log.info("%s seed %s: taken by another process, skipped", name, seed)
                        continue
                else:
                    row_id = ctx.store.start_generation_run(setup.model_id, name, seed,
                                                            num_samples, steps,
                                                            no_mlflow=no_mlflow, force=force)
                target = samples_path(root, setup.model_id, name, seed, num_samples, steps)
                records.append(_generate_one(ctx, setup, method, seed, num_samples, steps,
                                             row_id, target, batch_size, device, renders))
    return records


def _existing(ctx: JobContext, model_id: str, method: str, seed: int, n: int,
              steps: int) -> GenerationRecord | None:
    """The record of a generation the store has as succeeded, or None."""
    row = ctx.store.find_generation_run(model_id, method, seed, n, steps)
    if row is None or row.status != "succeeded" or not row.samples_path:
        return None
    md5 = ""
    dvc = dvc_file(ctx.workspace.root / row.samples_path)
    if dvc.exists():
        md5 = yaml.safe_load(dvc.read_text())["outs"][0]["md5"]
    return GenerationRecord(model_id, method, seed, n, steps, row.id, row.mlflow_run_id,
                            row.samples_path, md5, row.samples_sha256 or "", skipped=True)


def _generate_one(ctx: JobContext, setup: GenerationSetup, method: Method, seed: int,
                  num_samples: int, steps: int, row_id: int, target: Path,
                  batch_size: int | None, device: str, renders: int) -> GenerationRecord:
    """One (method, seed): MLflow run, sampling, DVC, then the row is marked succeeded."""
    mid, sha, ckpt, name = setup.model_id, setup.sha256, setup.ckpt, method.format()
    params = {"model_id": mid, "method": name, "seed": seed, "num_samples": num_samples,
              "steps": steps, "batch_size": batch_size, "device": device,
              "method_fields": method.fields(), "method_config": method.legacy_config(),
              "checkpoint": {"path": ctx.rel(setup.model_path), "sha256": sha,
                             "version": ckpt.version, "noise": ckpt.noise},
              "dataset_id": ckpt.dataset_id}
    tags = {"bdgen.model_id": mid, "bdgen.method": name, "bdgen.seed": seed,
            "bdgen.dataset_id": ckpt.dataset_id, "bdgen.generation_run_id": row_id,
            "bdgen.num_samples": num_samples, "bdgen.steps": steps,
            "bdgen.artifact.checkpoint.sha256": sha}
    start = time.perf_counter()
    try:
        with ctx.tracker.open_run("generate", f"{mid}/{name}/{seed}",
                                  experiment_name(ckpt.dataset_id), params, tags) as run:
            if run.run_id is not None:
                ctx.store.link_mlflow_run("generation", row_id, run.run_id)
            res = sample_to_file(setup, method, seed, num_samples, steps, target,
                                 batch_size=batch_size)
            ref = track(ctx.workspace.root, res.path)
            if ref.sha256 != res.sha256:
                raise BdgenError(f"{res.path} changed while being registered "
                                 f"(sha256 {ref.sha256[:12]} != {res.sha256[:12]})")
            run.set_tags(ref.tags("samples"))
            run.log_metrics({"gen/wall_s": res.wall_s, "gen/samples_per_s": res.samples_per_s,
                             "gen/model_calls": res.model_calls})
            if renders and ctx.tracker.enabled:
                _log_renders(run, ctx.workspace, res.path, f"{name} seed {seed}", renders)
            ctx.store.finish_generation_run(row_id, ref.sha256, ref.path,
                                            mlflow_run_id=run.run_id,
                                            duration_s=time.perf_counter() - start)
    except BaseException as exc:
        ctx.store.fail_run(row_id, f"{type(exc).__name__}: {exc}")
        raise
    return GenerationRecord(mid, name, seed, num_samples, steps, row_id, run.run_id,
                            ref.path, ref.md5, ref.sha256)


def _log_renders(run: TrackedRun, ws: Workspace, samples: Path, title: str, n: int) -> None:
    """A few generated bubble diagrams as a PNG on the MLflow run."""
    sf = load_samples(samples)
    vocab = VocabConfig(int(sf.model["n_max"]))
    graphs = [detokenize(sf.tokens[i].numpy(), sf.pad_mask[i].numpy(), vocab)
              for i in range(min(n, sf.tokens.shape[0]))]
    with tempfile.TemporaryDirectory(dir=ws.cache_dir if ws.cache_dir.is_dir() else None) as d:
        run.log_artifact(render_bubbles(graphs, Path(d) / "samples.png", title), "plots")
