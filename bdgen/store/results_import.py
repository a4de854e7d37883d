"""Importing result files (the results-JSON format of :mod:`bdgen.eval.results_json`,
spec §7.3) into the store: ``bdgen import-legacy``.

Identity of what a result file describes:

* model: from the schedule-tag folder above the file (spec §7.5: ``loglinear_noise_sc``,
  older ``loglinear``; ``learned[_noise_sc]`` means v2) and the ``v2_`` prefix / ``is_v2``
  (v2 results were copied into v1 folders; the v2 sampler ignores the schedule), recorded as
  a model row ``legacy-v1-loglinear`` / ``legacy-v2-learned`` whose checkpoint is the file
  name the JSON kept (``checkpoint_final.pt``);
* method: the ``config`` block (:meth:`Method.from_legacy_config`), which must name the
  same method as the file;
* one generation run (no samples file) and one evaluation run per seed of ``per_seed``,
  ``num_samples``/``steps`` from ``config``; the ``denoising`` block is a denoising record
  scoped to (model, method), because those blocks differ per method file.

Every row carries provenance "legacy import" with the source path and the file's sha256.
Each file is imported in one transaction; importing the same file again changes nothing,
and the same identities from a file with other content are refused.

Format v1 files (one seed, flat metrics; spec §7.3) are upgraded on load
(:func:`bdgen.eval.results_json.upgrade_v1`) and imported as one-seed results. That they
were upgraded is kept without a schema change in the evaluation run's
``evaluator_version``: ``legacy-format-1`` instead of ``legacy-format-2`` (the column
already names the file format, is free text, and is a ``--where`` filter). ``provenance``
cannot say it: a CHECK constraint allows only "bdgen" and "legacy import".
``Store.method_results`` turns the marker into ``MethodResult.upgraded_from_v1``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bdgen.diffusion.method import Method as MethodSpec
from bdgen.errors import BdgenError
from bdgen.eval.aggregate import aggregate_seeds
from bdgen.eval.registry import CONSTRAINT_OVERALL
from bdgen.eval.results_json import UPGRADED_FLAG, as_format_2
from bdgen.guidance.names import GUIDED_CONFIG_MARKERS
from bdgen.store.evaluations import AlreadyRecorded, Evaluations
from bdgen.store.models import (
    IMPORT_PROVENANCE,
    DenoisingEvaluation,
    EvaluationRun,
    GenerationRun,
)
from bdgen.store.normalise import normalise_denoising, normalise_metrics
from bdgen.util.clock import utcnow

#: ``reference`` of imported evaluations: the original evaluator's hard-coded train split,
#: seed 42 (spec §6.1, §10 #24).
IMPORTED_REFERENCE = "legacy"
#: ``evaluator_version`` of imported evaluations, naming the file format they came from.
IMPORTED_V2_EVALUATOR = "legacy-format-2"
IMPORTED_V1_EVALUATOR = "legacy-format-1"
IMPORTED_EVALUATORS = (IMPORTED_V2_EVALUATOR, IMPORTED_V1_EVALUATOR)
SCHEDULES = ("linear", "loglinear", "cosine", "learned")
# schedule-tag folders (spec §7.5); guided rounds sit in sub-folders of one, or in a copy
# named "guided_<schedule>" (shared/legacy_eval_results/guided_loglinear)
_SCHEDULE_DIR = re.compile(rf"^(?:guided_)?({'|'.join(SCHEDULES)})(?:_noise_sc)?$")
#: Prefix of the constraint-set identity of imported legacy results (see
#: :func:`legacy_constraint_set`); a bdgen identity is a bare sha256.
LEGACY_CS_PREFIX = "legacy-"
_SATISFACTION = "constraint/satisfaction_"


@dataclass
class FileReport:
    path: Path
    status: str  # "added" | "skipped" | "failed"
    detail: str
    added: int = 0  # evaluation runs added
    skipped: int = 0  # evaluation runs already present

    def line(self) -> str:
        return f"{self.status}: {self.path}: {self.detail}"


def iter_result_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """JSON files under each path (a file, or a directory tree), in sorted order."""
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(q for q in p.rglob("*.json") if q.is_file())
        else:
            yield p


def model_identity(path: Path, method: str, config: dict,
                   schedule: str | None = None) -> tuple[str, str, str, str]:
    """(model_id, version, noise_schedule, legacy_label) of a result file."""
    folder = None
    if schedule is None:
        for d in path.resolve().parents:
            m = _SCHEDULE_DIR.match(d.name)
            if m:
                schedule, folder = m.group(1), d.name
                break
    elif schedule not in SCHEDULES:
        raise BdgenError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    is_v2 = bool(config.get("is_v2")) or method.startswith("v2_") or schedule == "learned"
    if is_v2:
        return "legacy-v2-learned", "v2", "learned", f"legacy:{folder or 'learned'}"
    if schedule is None:
        raise BdgenError("cannot tell the model: no schedule folder (e.g. loglinear_noise_sc) "
                         "above the file; pass a schedule explicitly")
    return f"legacy-v1-{schedule}", "v1", schedule, f"legacy:{folder or schedule}"


def _parse(path: Path, raw: bytes, schedule: str | None) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BdgenError(f"not valid JSON ({exc})") from None
    data = as_format_2(data)  # a v1 file becomes a one-seed v2 object
    for key in ("method", "config", "per_seed"):
        if key not in data:
            raise BdgenError(f"missing key {key!r}")
    name, config, per_seed = data["method"], data["config"], data["per_seed"]
    if not isinstance(name, str) or not isinstance(config, dict) or not isinstance(
            per_seed, dict) or not per_seed:
        raise BdgenError("method/config/per_seed have the wrong type or are empty")
    model = model_identity(path, name, config, schedule)
    if any(k in config for k in GUIDED_CONFIG_MARKERS) or "_guided_" in name:
        # a legacy guided config records neither the remasking strategy nor the tag's
        # meaning: the name says them, and the config must agree with it (G6.4)
        spec = MethodSpec.from_legacy_config(config, is_v2=model[1] == "v2", name=name)
    else:
        spec = MethodSpec.from_legacy_config(config, is_v2=model[1] == "v2")
    if spec.format() != name:
        raise BdgenError(f"config describes method {spec.format()!r} but the file names "
                         f"{name!r}")
    constraint_set = legacy_constraint_set(per_seed, config)
    if spec.guided and constraint_set is None:
        raise BdgenError("guided result without constraint/* metrics: its constraint set "
                         "is unknown")
    for key in ("num_samples", "sampling_steps"):
        if isinstance(config.get(key), bool) or not isinstance(config.get(key), int):
            raise BdgenError(f"config {key} must be an integer, got {config.get(key)!r}")
    seeds: dict[int, dict[str, float]] = {}
    for seed, metrics in per_seed.items():
        try:
            s = int(seed)
        except ValueError:
            raise BdgenError(f"per_seed key {seed!r} is not a seed") from None
        seeds[s] = normalise_metrics(metrics, f"per_seed[{seed}]")
    _check_summary(data.get("summary"), per_seed)
    denoising = normalise_denoising(data.get("denoising") or {}, "denoising")
    finished = None
    if isinstance(data.get("timestamp"), str):
        with contextlib.suppress(ValueError):
            finished = datetime.fromisoformat(data["timestamp"])
    return {"model": model, "method": spec, "seeds": seeds, "denoising": denoising,
            "num_samples": config["num_samples"], "steps": config["sampling_steps"],
            "checkpoint": config.get("checkpoint"), "finished": finished,
            "constraint_set": constraint_set,
            "evaluator": (IMPORTED_V1_EVALUATOR if data.get(UPGRADED_FLAG)
                          else IMPORTED_V2_EVALUATOR)}


def legacy_constraint_set(per_seed: dict, config: dict) -> str | None:
    """Deterministic constraint-set identity of a legacy result, or None without
    ``constraint/*`` metrics.

    Legacy files record neither the constraints nor the calibration (G6.4, G9 #4), and
    their ``guidance_config`` path changed content between rounds 1 and 2 under one name;
    what they do record is the constraint names, in the set's order, in their per-seed
    keys (G7.2). The identity is ``"legacy-" + sha256`` of the canonical JSON
    ``{"constraints": [names in order], "source": "legacy"}``: round 1 (CS1, with
    one_living) and rounds 2+ (CS2) get two identities, every CS2 round the same one, and
    no legacy identity can equal a bdgen ``ConstraintSet.identity`` (a bare sha256).
    All seeds must name the same constraints, and ``num_constraints`` must count them.
    A file written by bdgen (``bdgen evaluate --legacy-json``) records its set's identity
    as ``config["constraint_set"]``; that identity is kept.
    """
    recorded = config.get("constraint_set")
    if recorded is not None and not (isinstance(recorded, str)
                                     and re.fullmatch(r"[0-9a-f]{64}", recorded)):
        raise BdgenError(f"config constraint_set must be a sha256 identity, got "
                         f"{recorded!r}")
    names_by_seed = {tuple(k[len(_SATISFACTION):] for k in m if isinstance(k, str)
                           and k.startswith(_SATISFACTION) and k != CONSTRAINT_OVERALL)
                     for m in per_seed.values() if isinstance(m, dict)}
    if names_by_seed == {()}:
        return None
    if len(names_by_seed) != 1:
        raise BdgenError("seeds disagree on the constraint names of their constraint/* keys")
    (names,) = names_by_seed
    n = config.get("num_constraints")
    if n is not None and n != len(names):
        raise BdgenError(f"config num_constraints = {n!r} but the constraint/* keys name "
                         f"{len(names)} constraint(s): {', '.join(names)}")
    if recorded is not None:
        return recorded
    canonical = json.dumps({"constraints": list(names), "source": "legacy"}, sort_keys=True,
                           separators=(",", ":"))
    return LEGACY_CS_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


def _check_summary(summary: Any, per_seed: dict) -> None:
    """The stored summary must be what the per-seed values give (else the file was edited)."""
    if summary is None:
        return
    if not isinstance(summary, dict):
        raise BdgenError("summary is not an object")
    ours = aggregate_seeds(per_seed)
    for key, agg in ours.items():
        stored = summary.get(key)
        if not isinstance(stored, dict):
            raise BdgenError(f"summary lacks {key!r}")
        for field, value in (("mean", agg.mean), ("std", agg.std)):
            s = stored.get(field)
            if not isinstance(s, (int, float)) or not math.isclose(s, value, rel_tol=1e-9,
                                                                  abs_tol=1e-12):
                raise BdgenError(f"summary {key} {field} = {s!r} disagrees with per_seed "
                                 f"({value!r})")


class ResultFileImports(Evaluations):
    """``bdgen import-legacy``: result files into the store."""

    def import_result_files(self, paths: Iterable[str | Path],
                            schedule: str | None = None) -> list[FileReport]:
        """Import every result file under ``paths``; one report per file (missing paths
        too)."""
        reports = []
        for p in paths:
            if not Path(p).exists():
                reports.append(FileReport(Path(p), "failed", "no such file or directory"))
                continue
            files = list(iter_result_files([p]))
            if not files:
                reports.append(FileReport(Path(p), "failed", "no .json result files found"))
            reports.extend(self.import_result_file(f, schedule) for f in files)
        return reports

    def import_result_file(self, path: Path, schedule: str | None = None) -> FileReport:
        """Import one result file in one transaction; never raises for a bad file."""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            return FileReport(path, "failed", f"cannot read: {exc.strerror or exc}")
        sha = hashlib.sha256(raw).hexdigest()
        try:
            parsed = _parse(path, raw, schedule)
            with self.session() as s:
                added, skipped = self._write_imported(s, path.resolve(), sha, parsed)
        except BdgenError as exc:
            return FileReport(path, "failed", str(exc).splitlines()[0])
        status = "added" if added else "skipped"
        detail = (f"{parsed['method'].format()} on {parsed['model'][0]}: {added} run(s) added, "
                  f"{skipped} already present")
        return FileReport(path, status, detail, added, skipped)

    def _write_imported(self, s: Session, path: Path, sha: str,
                        p: dict[str, Any]) -> tuple[int, int]:
        model_id, version, noise, label = p["model"]
        model = self._model(s, model_id, version, noise, checkpoint_path=p["checkpoint"],
                             legacy_label=label)
        method = self._method(s, p["method"])
        prov = {"provenance": IMPORT_PROVENANCE, "source_path": str(path), "source_sha256": sha,
                "code_version": "legacy"}
        when = p["finished"] or utcnow()
        cs = p["constraint_set"]
        series = self._series(s, model.id, method.id, p["num_samples"], p["steps"], cs)
        sampled_with = cs if p["method"].guided else None
        added = skipped = 0
        for seed, metrics in sorted(p["seeds"].items()):
            key = {"series_pk": series.id, "seed": seed}
            gen = s.scalars(select(GenerationRun).filter_by(**key)).one_or_none()
            if gen is None:
                gen = GenerationRun(**key, status="succeeded", started_at=when, finished_at=when,
                                    no_mlflow=True, provenance=IMPORT_PROVENANCE,
                                    source_path=prov["source_path"], source_sha256=sha,
                                    code_version="legacy", constraint_set=sampled_with)
                s.add(gen)
                s.flush()
            elif gen.provenance != IMPORT_PROVENANCE:
                raise BdgenError(f"seed {seed}: a bdgen generation run (id {gen.id}) has the same "
                                 "identity")
            # either legacy format: a v1 and a v2 file must not both count for one seed
            done = s.scalars(select(EvaluationRun).where(
                EvaluationRun.generation_run_pk == gen.id,
                EvaluationRun.reference == IMPORTED_REFERENCE,
                EvaluationRun.evaluator_version.in_(IMPORTED_EVALUATORS),
                EvaluationRun.status == "succeeded").order_by(EvaluationRun.id)).all()
            if done:
                other = next((ev for ev in done if ev.source_sha256 != sha), None)
                if other is not None:
                    raise BdgenError(f"seed {seed} was already imported from {other.source_path} "
                                     "with different content")
                skipped += 1
                continue
            self._insert_evaluation(s, gen.id, metrics, reference=IMPORTED_REFERENCE,
                                     evaluator_version=p["evaluator"], replace=True,
                                     bookkeeping={**prov, "no_mlflow": True, "started_at": when,
                                                  "duration_s": 0.0},
                                     constraint_set=cs)
            added += 1
        if p["denoising"]:
            den = s.scalars(select(DenoisingEvaluation).filter_by(
                model_pk=model.id, scope=method.name)).one_or_none()
            if den is not None and den.source_sha256 not in (None, sha):
                raise BdgenError(f"denoising was already imported from {den.source_path} with "
                                 "different content")
            if den is None:
                with contextlib.suppress(AlreadyRecorded):
                    self._insert_denoising(s, model.id, method, p["denoising"], replace=False,
                                            bookkeeping={**prov, "no_mlflow": True})
        return added, skipped

