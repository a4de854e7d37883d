"""What a sweep covers: its grid, from options or the DVC pipeline's ``params.yaml``, with
every model resolved, hashed and registered once before any work
(:mod:`bdgen.pipeline.sweep` runs it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bdgen.errors import BdgenError
from bdgen.pipeline.workspace import Workspace
from bdgen.store.api import Store


@dataclass(frozen=True)
class PlannedModel:
    path: str               # checkpoint, workspace-relative when inside it
    model_id: str
    methods: tuple[str, ...]  # canonical names with the checkpoint's prefix


def plan_models(ws: Workspace, store: Store, models: Sequence[str], methods: Sequence[str],
                seeds: Sequence[int], num_samples: int, steps: int) -> list[PlannedModel]:
    """Resolve, hash and register every model once; all validation before any work."""
    from bdgen.diffusion.method import Method
    from bdgen.model.checkpoint import load_checkpoint, model_id
    from bdgen.pipeline.checkpoints import checkpoint_sha256, register_checkpoint, resolve_model
    from bdgen.pipeline.context import workspace_relative
    from bdgen.pipeline.generate import resolve_methods

    for name, v in (("--steps", steps), ("--num-samples", num_samples)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise BdgenError(f"{name} must be an integer >= 1, got {v!r}")
    if not seeds or any(int(s) < 0 for s in seeds):
        raise BdgenError(f"--seeds must be a non-empty list of integers >= 0, got {seeds}")
    if not models:
        raise BdgenError("no --models given")
    for name in methods:
        Method.parse(name)
    planned: list[PlannedModel] = []
    for ref in models:
        path, recorded = resolve_model(ws, store, ref)
        ckpt = load_checkpoint(path)
        sha = checkpoint_sha256(path, recorded)
        mid = model_id(ckpt, sha)
        rel = workspace_relative(ws, path)
        register_checkpoint(store, ckpt, rel, sha, mid)
        names = tuple(m.format() for m in resolve_methods(methods, ckpt))
        planned.append(PlannedModel(rel, mid, names))
    return planned


def sweep_from_params(params_path: str | Path) -> dict:
    """The grid of a ``params.yaml`` (the DVC pipeline's): models from the train stages'
    receipts, methods, seeds, and the generate section's sizes and device."""
    from bdgen.pipeline.stages import load_params, method_names, read_receipt, workspace_of

    params = load_params(params_path)
    base = Path(params_path).resolve().parent
    models = []
    for key in params.get("models") or {}:
        receipt = base / "results" / "models" / f"{key}.json"
        if not receipt.is_file():
            raise BdgenError(f"model {key!r} of {params_path} has no receipt {receipt} "
                             "(train it first: dvc repro train)")
        models.append(str(read_receipt(receipt)["model_id"]))
    gen = params.get("generate") or {}
    return {"workspace": workspace_of(params, params_path), "models": models,
            "methods": method_names(params, params_path),
            "seeds": [int(s) for s in params.get("seeds") or []],
            "num_samples": int(gen.get("num_samples", 1000)),
            "steps": int(gen.get("steps", 100)), "device": str(gen.get("device", "auto"))}
