"""The tracked generation job: every (method, seed) of a model as one MLflow run, one
generation row in the store and one DVC-tracked samples file (order: :mod:`.context`)."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bdgen.data.graph import detokenize
from bdgen.data.samples_file import load_samples
from bdgen.data.vocab import VocabConfig
from bdgen.diffusion.method import Method
from bdgen.diffusion.sampler import SampleOutput
from bdgen.errors import BdgenError
from bdgen.pipeline.checkpoints import checkpoint_sha256, register_checkpoint, resolve_model
from bdgen.pipeline.context import JobContext
from bdgen.pipeline.generate import (
    GenerateResult,
    GenerationSetup,
    prepare_generation,
    sample_to_file,
    samples_path,
)
from bdgen.pipeline.heartbeat import Heartbeat
from bdgen.pipeline.plots import guidance_plot, render_bubbles
from bdgen.pipeline.result_runs import ResultKey, dataset_ref, result_parent
from bdgen.pipeline.stored_runs import GenerationRecord, stored_generation
from bdgen.pipeline.workspace import Workspace
from bdgen.store.claims import Claim, ClaimLost
from bdgen.tracking import TrackedRun, experiment_name, track
from bdgen.util.faults import fault_point

log = logging.getLogger(__name__)


def tracked_generate(ws: Workspace, model_path: str | Path, methods: Sequence[str],
                     seeds: Sequence[int], num_samples: int = 1000, steps: int = 100, *,
                     batch_size: int | None = None, device: str = "auto",
                     no_mlflow: bool = False, force: bool = False, claim: bool = False,
                     renders: int = 6, out_dir: str | Path | None = None,
                     constraints: str | Path | None = None,
                     calibration: str | Path | None = None) -> list[GenerationRecord]:
    """Generate every (method, seed) as one tracked run each.

    ``model_path``: a checkpoint file or a model id the store has
    (:func:`~bdgen.pipeline.checkpoints.resolve_model`). ``out_dir`` (inside the workspace):
    write the samples files below it instead of the workspace's own layout.

    Runs the store already has (succeeded) are skipped unless ``force``. Each run is
    claimed (:mod:`bdgen.store.claims`) and its claim renewed while it works; a run another
    live process holds is an error, or with ``claim`` (sweeps) skipped. A run whose claim
    another process took over while this one was frozen past the lease expiry
    (:class:`~bdgen.store.claims.ClaimLost`) is logged and left to it: its record is the new
    holder's when that one finished it already, else it is left out; the other runs go on.

    Guided methods (``constraints``, ``calibration``: see
    :func:`~bdgen.pipeline.generate.prepare_generation`): the constraint set's identity is
    recorded on the run (the store's generation run and series, MLflow param and tag
    ``constraint_set``/``bdgen.constraint_set``, the samples file, its path), the per-step
    diagnostics are logged as MLflow metric series ``guidance/<name>`` with their step, plus
    a plot.
    """
    with JobContext.open(ws, no_mlflow) as ctx:
        path, recorded = resolve_model(ws, ctx.store, model_path)
        sha = checkpoint_sha256(path, recorded) if path.is_file() else None
        setup = prepare_generation(path, methods, seeds, num_samples, steps, batch_size,
                                   device, sha256=sha, constraints=constraints,
                                   calibration=calibration)
        register_checkpoint(ctx.store, setup.ckpt, ctx.rel(path), setup.sha256, setup.model_id)
        root: Workspace | Path = Path(out_dir) if out_dir is not None else ws
        records: list[GenerationRecord] = []
        bar = ctx.progress(len(setup.methods) * len(seeds), "generate", "run")
        for method in setup.methods:
            name = method.format()
            for seed in map(int, seeds):
                cs_id = setup.constraint_set_id(method)
                bar.update_to(bar.done + 1, f"{name} seed {seed}")  # counts runs started
                done = None if force else stored_generation(ctx, setup.model_id, name,
                                                            seed, num_samples, steps, cs_id)
                if done is not None:
                    log.info("%s seed %s: already done (generation run %s), skipped", name,
                             seed, done.generation_run_id)
                    records.append(done)
                    continue
                ctx.tracker.connect()  # work to do: MLflow's store opens before the claim
                if claim:
                    got = ctx.store.claim_generation_run(setup.model_id, name, seed,
                                                         num_samples, steps,
                                                         no_mlflow=no_mlflow,
                                                         constraint_set=cs_id)
                    if not got.won:
                        log.info("%s seed %s: %s, skipped", name, seed,
                                 "done by another process" if got.done else
                                 f"taken by {got.holder.describe() if got.holder else '?'}")
                        continue
                else:  # refuses a run a live process holds (a dead one is taken over)
                    got = ctx.store.start_generation_claim(setup.model_id, name, seed,
                                                           num_samples, steps,
                                                           no_mlflow=no_mlflow, force=force,
                                                           constraint_set=cs_id)
                if got.claim is not None and got.claim.took_over is not None:
                    log.info("%s seed %s: taking over from a dead claim (%s)", name, seed,
                             got.claim.took_over.describe())
                assert got.run_id is not None
                row_id = got.run_id
                target = samples_path(root, setup.model_id, name, seed, num_samples, steps,
                                      cs_id)
                try:
                    with Heartbeat(ctx.store, got.claim):
                        records.append(_generate_one(ctx, setup, method, seed, num_samples,
                                                     steps, row_id, target, batch_size,
                                                     device, renders, claim=got.claim))
                except ClaimLost as lost:  # the run is another process's now: it records it
                    log.warning("%s seed %s: not recorded: %s", name, seed, lost)
                    done = stored_generation(ctx, setup.model_id, name, seed, num_samples,
                                             steps, cs_id)
                    if done is not None:  # finished by the new holder already: its record
                        records.append(done)
    return records


def _generate_one(ctx: JobContext, setup: GenerationSetup, method: Method, seed: int,
                  num_samples: int, steps: int, row_id: int, target: Path,
                  batch_size: int | None, device: str, renders: int,
                  sampled: tuple[SampleOutput, float] | None = None,
                  made: GenerateResult | None = None,
                  claim: Claim | None = None) -> GenerationRecord:
    """One (method, seed): MLflow run, sampling, DVC, then the row is marked succeeded.
    ``sampled``: the seed's samples when they were drawn already (a seed batch); ``made``:
    its samples file when it was written already (a study's sampling unit), only
    registered here (its sha256 is checked again by :func:`track`).

    ``claim``: the row's claim (this process's, or the sweep driver's that submitted the
    unit). The row is finished or failed under it only; when it was lost meanwhile (this
    process frozen past the lease expiry and the run taken over), :class:`ClaimLost` is
    raised and the row, which is the new holder's now, is left alone, and so is its samples
    file when the loss is seen before writing it (the claim is checked once sampled)."""
    mid, sha, ckpt, name = setup.model_id, setup.sha256, setup.ckpt, method.format()
    cs_id = setup.constraint_set_id(method)
    params = {"model_id": mid, "method": name, "seed": seed, "num_samples": num_samples,
              "steps": steps, "batch_size": batch_size, "device": device,
              "method_fields": method.fields(), "method_config": method.legacy_config(),
              "checkpoint": {"path": ctx.rel(setup.model_path), "sha256": sha,
                             "version": ckpt.version, "noise": ckpt.noise},
              "dataset_id": ckpt.dataset_id}
    if cs_id is not None and setup.constraints is not None:
        params["constraint_set"] = cs_id
        params["constraints"] = {c["name"]: {k: v for k, v in c.items() if k != "name"}
                                 for c in setup.constraints.to_dict()["constraints"]}
    tags = {"bdgen.model_id": mid, "bdgen.method": name, "bdgen.seed": seed,
            "bdgen.dataset_id": ckpt.dataset_id, "bdgen.generation_run_id": row_id,
            "bdgen.num_samples": num_samples, "bdgen.steps": steps,
            "bdgen.artifact.checkpoint.sha256": sha, "bdgen.constraint_set": cs_id}
    start = time.perf_counter()
    experiment = experiment_name(ckpt.dataset_id)
    dataset = dataset_ref(ckpt.dataset_id, ctx.rel(ctx.workspace.dataset_path(ckpt.dataset_id)))
    try:
        parent = result_parent(ctx.store, ctx.tracker, experiment,
                               ResultKey(mid, name, num_samples, steps), dataset)
        with ctx.tracker.open_run("generate", f"{mid}/{name}/{seed}", experiment, params,
                                  tags, run_name=f"gen {name}/{seed}", parent=parent) as run:
            if run.run_id is not None:
                ctx.store.link_mlflow_run("generation", row_id, run.run_id)
            run.log_dataset(dataset.name, dataset.dataset_id, dataset.source, "generation")
            fault_point("generate.run-open")
            res = made or sample_to_file(
                setup, method, seed, num_samples, steps, target, batch_size=batch_size,
                sampled=sampled, before_write=None if claim is None else (
                    lambda: ctx.store.ensure_claim(claim, f"generation run {row_id}")))
            ref = track(ctx.workspace.root, res.path)
            if ref.sha256 != res.sha256:
                raise BdgenError(f"{res.path} changed while being registered "
                                 f"(sha256 {ref.sha256[:12]} != {res.sha256[:12]})")
            fault_point("generate.file_written")
            run.set_tags(ref.tags("samples"))
            run.log_metrics({"gen/wall_s": res.wall_s, "gen/samples_per_s": res.samples_per_s,
                             "gen/model_calls": res.model_calls})
            if res.diagnostics and ctx.tracker.enabled:
                _log_diagnostics(run, ctx.workspace, res.diagnostics, f"{name} seed {seed}")
            if renders and ctx.tracker.enabled:
                _log_renders(run, ctx.workspace, res.path, f"{name} seed {seed}", renders)
            ctx.store.finish_generation_run(row_id, ref.sha256, ref.path, claim=claim,
                                            mlflow_run_id=run.run_id,
                                            duration_s=time.perf_counter() - start)
    except BaseException as exc:
        if not isinstance(exc, ClaimLost):
            try:
                ctx.store.fail_run(row_id, f"{type(exc).__name__}: {exc}", claim=claim)
            except ClaimLost as lost:  # the run is another process's now: leave it
                log.warning("%s seed %s: not marked failed: %s", name, seed, lost)
        raise
    return GenerationRecord(mid, name, seed, num_samples, steps, row_id, run.run_id,
                            ref.path, ref.md5, ref.sha256)


def _log_diagnostics(run: TrackedRun, ws: Workspace, diagnostics: dict[str, list[float]],
                     title: str) -> None:
    """A guided run's per-step diagnostics: one metric series per name (step = s), and a
    plot of the main ones."""
    for key, values in diagnostics.items():
        run.log_metric_series(f"guidance/{key}", values)
    with tempfile.TemporaryDirectory(dir=ws.cache_dir if ws.cache_dir.is_dir() else None) as d:
        run.log_artifact(guidance_plot(diagnostics, Path(d) / "guidance.png", title), "plots")


def _log_renders(run: TrackedRun, ws: Workspace, samples: Path, title: str, n: int) -> None:
    """A few generated bubble diagrams as a PNG on the MLflow run."""
    sf = load_samples(samples)
    vocab = VocabConfig(int(sf.model["n_max"]))
    graphs = [detokenize(sf.tokens[i].numpy(), sf.pad_mask[i].numpy(), vocab)
              for i in range(min(n, sf.tokens.shape[0]))]
    with tempfile.TemporaryDirectory(dir=ws.cache_dir if ws.cache_dir.is_dir() else None) as d:
        run.log_artifact(render_bubbles(graphs, Path(d) / "samples.png", title), "plots")
