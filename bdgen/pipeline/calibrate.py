"""``bdgen constraints calibrate``: P90 normalisers of a constraint set (spec G3.2) from the
unguided samples the workspace holds for one model and method.

Which samples: every succeeded generation run the store records for (model, method), found
through its samples files under ``artifacts/samples/<model>/<method>/`` (a file the store
does not know, or whose recorded status is not succeeded, is not used; a file that changed
since it was recorded, or one DVC tracks but that is missing, is an error). Samples that do
not detokenize are skipped and counted, as in the legacy protocol.

What is written: a calibration document (:func:`bdgen.guidance.calibration.calibration_document`,
normalisers in constraint order, the identities of the plain and calibrated constraint set,
and the runs it came from) at ``artifacts/calibration/<model>/<method>/<set id>.json`` or
``--out``; atomically, and DVC-tracked when it lies inside the workspace.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bdgen.data.graph import Graph, detokenize
from bdgen.data.samples_file import load_samples
from bdgen.data.vocab import VocabConfig
from bdgen.diffusion.method import Method
from bdgen.errors import BdgenError
from bdgen.guidance.calibration import calibrate, calibration_document
from bdgen.guidance.constraints import ConstraintSet
from bdgen.guidance.schema import load_constraint_set
from bdgen.pipeline.store import open_store
from bdgen.pipeline.workspace import Workspace
from bdgen.store.records import GenerationRunInfo
from bdgen.tracking import ArtifactRef, track
from bdgen.util.atomic import atomic_write_json
from bdgen.util.hashing import file_digests

DEFAULT_CALIBRATION_METHOD = "llada_topp0.9_no_remask"  # the legacy calibration source


@dataclass(frozen=True)
class CalibrationResult:
    path: Path
    constraint_set: ConstraintSet       # calibrated
    normalisers: dict[str, float]
    runs: list[dict]                    # seed, num_samples, steps, samples_sha256 of each run
    num_graphs: int
    skipped: int
    artifact: ArtifactRef | None        # None when written outside the workspace

    @property
    def identity(self) -> str:
        return self.constraint_set.identity


def calibration_path(ws: Workspace, model_id: str, method: str, cs: ConstraintSet) -> Path:
    """Default location of a calibration file (beside the workspace's other artifacts)."""
    return ws.root / "artifacts" / "calibration" / model_id / method / f"{cs.short_id}.json"


def _rel(ws: Workspace, path: Path) -> str:
    return path.resolve().relative_to(ws.root.resolve()).as_posix()


def _succeeded_runs(ws: Workspace, model_id: str, method: str) -> list[GenerationRunInfo]:
    """Store rows (succeeded) of the samples files of (model, method), by seed."""
    store = open_store(workspace=ws)
    try:
        known = store.model_ids()
        if model_id not in known:
            near = difflib.get_close_matches(model_id, known, n=3, cutoff=0.5)
            hint = (f"; did you mean {', '.join(near)}?" if near else
                    f"; the store has {len(known)} model(s)")
            raise BdgenError(f"model {model_id!r} is not in the store{hint}")
        folder = ws.samples_path(model_id, method, 0, 0, 0).parent
        missing = sorted(p for p in folder.glob("seed-*.pt.dvc")
                         if not p.with_name(p.name[:-4]).exists())
        if missing:
            raise BdgenError(f"samples file {_rel(ws, missing[0])[:-4]} is missing (run "
                             f"`dvc pull` for it)")
        files = {_rel(ws, p): p for p in sorted(folder.glob("seed-*.pt"))}
        ids = store.generation_runs_by_path(list(files))
        runs = [store.generation_run(i) for i in ids.values()]
    finally:
        store.close()
    runs = [r for r in runs if r.status == "succeeded" and r.model_id == model_id
            and r.method == method]
    return sorted(runs, key=lambda r: (r.seed, r.num_samples, r.steps))


def _graphs(ws: Workspace, run: GenerationRunInfo, model_id: str,
            method: str) -> tuple[list[Graph], int]:
    path = ws.root / str(run.samples_path)
    if file_digests(path)[1] != run.samples_sha256:
        raise BdgenError(f"{run.samples_path} has changed since the store recorded it "
                         f"(sha256 differs)")
    sf = load_samples(path)
    if sf.method != method or sf.model.get("id") != model_id:
        raise BdgenError(f"{run.samples_path} holds {sf.model.get('id')}/{sf.method}, "
                         f"not {model_id}/{method}")
    vocab = VocabConfig(sf.n_max)
    graphs, skipped = [], 0
    for tokens, pad in zip(sf.tokens.numpy(), sf.pad_mask.numpy().astype(np.bool_)):
        try:
            graphs.append(detokenize(tokens, pad, vocab))
        except ValueError:
            skipped += 1
    return graphs, skipped


def calibrate_constraints(ws: Workspace, model_id: str, constraints: str | Path,
                          method: str = DEFAULT_CALIBRATION_METHOD,
                          out: str | Path | None = None) -> CalibrationResult:
    """Compute, write and track the calibration of ``constraints`` for (model, method)."""
    cs = load_constraint_set(constraints)
    spec = Method.parse(method)
    if spec.guided:
        raise BdgenError(f"calibration needs unguided samples; {method!r} is guided")
    method = spec.format()
    runs = _succeeded_runs(ws, model_id, method)
    if not runs:
        raise BdgenError(f"no succeeded generation run with a samples file for model "
                         f"{model_id!r}, method {method!r} in {ws.root} (bdgen generate "
                         f"--model {model_id} --method {method})")
    graphs: list[Graph] = []
    skipped = 0
    for run in runs:
        g, s = _graphs(ws, run, model_id, method)
        graphs += g
        skipped += s
    normalisers = calibrate(cs, graphs)
    used = [{"seed": r.seed, "num_samples": r.num_samples, "steps": r.steps,
             "samples_sha256": r.samples_sha256} for r in runs]
    doc = calibration_document(cs, normalisers, {
        "model": model_id, "method": method, "runs": used, "num_graphs": len(graphs),
        "skipped_undecodable": skipped})
    path = Path(out) if out is not None else calibration_path(ws, model_id, method, cs)
    if path.suffix != ".json":
        raise BdgenError(f"--out {path}: a calibration file is JSON (name it *.json)")
    if path.is_dir():
        raise BdgenError(f"--out {path} is a directory")
    atomic_write_json(path, doc, indent=2)
    try:
        path.resolve().relative_to(ws.root.resolve())
        inside = True
    except ValueError:
        inside = False
    ref = track(ws.root, path) if inside else None
    return CalibrationResult(path, cs.with_normalisers(normalisers), normalisers, used,
                             len(graphs), skipped, ref)


__all__ = ["DEFAULT_CALIBRATION_METHOD", "CalibrationResult", "calibrate_constraints",
           "calibration_path"]
