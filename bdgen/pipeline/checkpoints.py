"""A model as a job names it: a checkpoint file, or the model id the store recorded for one;
checked against the store's sha256 and registered there (dataset and model rows)."""

from __future__ import annotations

import difflib
from pathlib import Path

from bdgen.errors import BdgenError
from bdgen.model.checkpoint import Checkpoint
from bdgen.pipeline.workspace import Workspace
from bdgen.store.api import Store
from bdgen.util.hashing import file_sha256


def resolve_model(ws: Workspace, store: Store, ref: str | Path) -> tuple[Path, str | None]:
    """A checkpoint file, or the model id the store recorded for one (``v1-loglinear-
    3fa9c0d2e1``, as ``bdgen leaderboard`` shows it): ``(path, recorded sha256 or None)``.

    Why ids: after ``dvc pull`` on another machine researchers know a model by its id, not
    by the run directory its checkpoint happens to live in.
    """
    path = Path(ref)
    if path.is_file() or path.suffix == ".pt" or len(path.parts) > 1:
        return path, None  # a path: load_checkpoint names a missing or bad file
    found = store.model_checkpoint(str(ref))
    if found is None:
        known = store.model_ids()
        close = difflib.get_close_matches(str(ref), known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else (
            f"; the store has {len(known)} model(s)" if known else "; the store has no models")
        raise BdgenError(f"model {str(ref)!r} is neither a checkpoint file nor a model id in "
                         f"the store{hint}")
    if not found.path:
        raise BdgenError(f"model {ref}: the store has no checkpoint for it (imported results?)")
    ckpt = Path(found.path) if Path(found.path).is_absolute() else ws.root / found.path
    if not ckpt.is_file():
        raise BdgenError(f"model {ref}: its checkpoint {found.path} is missing "
                         "(run `dvc pull` for it?)")
    return ckpt, found.sha256


def checkpoint_sha256(path: Path, recorded: str | None) -> str:
    """The checkpoint's sha256 (the one hash of it a job computes), checked against what the
    store recorded for it when it was named by model id."""
    sha = file_sha256(path)
    if recorded and sha != recorded:
        raise BdgenError(f"checkpoint {path} has changed since the store recorded "
                         f"it (sha256 {sha[:10]}, recorded {recorded[:10]})")
    return sha


def register_checkpoint(store: Store, ckpt: Checkpoint, path: str | Path, sha256: str,
                        model_id: str, mlflow_run_id: str | None = None) -> None:
    """Dataset and model rows for a checkpoint (idempotent): generation needs them."""
    source = ckpt.dataset_id.split("-", 1)[0]
    store.get_or_create_dataset(ckpt.dataset_id, source, ckpt.dataset_hash,
                                split_seed=ckpt.split.get("seed"),
                                split_fractions=ckpt.split.get("fractions"))
    store.get_or_create_model(model_id, ckpt.version, ckpt.noise_type,
                              model_config=ckpt.model_config, train_config=ckpt.train_config,
                              dataset_id=ckpt.dataset_id, checkpoint_path=str(path),
                              checkpoint_sha256=sha256, mlflow_run_id=mlflow_run_id)
