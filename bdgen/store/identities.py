"""Identities: datasets, models, methods, series (model x method x size) and metric
definitions, each created once and found again by its natural key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bdgen.diffusion.method import Method as MethodSpec
from bdgen.errors import BdgenError
from bdgen.eval.registry import MetricDef, lookup
from bdgen.store.base import StoreBase
from bdgen.store.engine import redact
from bdgen.store.models import Dataset, MetricDefinition, Model, Series
from bdgen.store.models import Method as MethodRow
from bdgen.store.normalise import method_spec
from bdgen.util.clock import utcnow


class Identities(StoreBase):
    """Get-or-create of the identity rows every run hangs from."""

    def get_or_create_dataset(self, dataset_id: str, source: str, content_hash: str, *,
                              split_seed: int | None = None,
                              split_fractions: Sequence[float] | None = None,
                              params: dict | None = None, stats: dict | None = None) -> int:
        """Primary key of the dataset row ``dataset_id`` (inserted if new)."""
        with self.session() as s:
            row = self._get_or_create(
                s, Dataset, {"dataset_id": dataset_id},
                {"source": source, "content_hash": content_hash, "split_seed": split_seed,
                 "split_fractions": list(split_fractions) if split_fractions else None,
                 "params": params, "stats": stats, "created_at": utcnow()})
            if row.content_hash != content_hash:
                raise BdgenError(f"dataset {dataset_id!r} is already recorded with content "
                                 f"hash {row.content_hash[:12]}, not {content_hash[:12]}")
            return row.id

    def get_or_create_model(self, model_id: str, version: str, noise_schedule: str, *,
                            model_config: dict | None = None,
                            train_config: dict | None = None,
                            dataset_id: str | None = None,
                            checkpoint_path: str | None = None,
                            checkpoint_sha256: str | None = None,
                            legacy_label: str | None = None,
                            mlflow_run_id: str | None = None) -> int:
        """Primary key of the model row ``model_id`` (inserted if new; ``dataset_id`` must be
        recorded already). An existing row with another version/schedule/checkpoint is an
        error."""
        if version not in ("v1", "v2"):
            raise BdgenError(f"model version must be 'v1' or 'v2', got {version!r}")
        with self.session() as s:
            return self._model(s, model_id, version, noise_schedule, model_config=model_config,
                               train_config=train_config, dataset_id=dataset_id,
                               checkpoint_path=checkpoint_path,
                               checkpoint_sha256=checkpoint_sha256,
                               legacy_label=legacy_label, mlflow_run_id=mlflow_run_id).id

    def _model(self, s: Session, model_id: str, version: str, noise_schedule: str,
               dataset_id: str | None = None, **values: Any) -> Model:
        dataset_pk = None
        if dataset_id is not None:
            dataset_pk = s.scalar(select(Dataset.id).where(Dataset.dataset_id == dataset_id))
            if dataset_pk is None:
                raise BdgenError(f"dataset {dataset_id!r} is not recorded in the store")
        row = self._get_or_create(
            s, Model, {"model_id": model_id},
            {"version": version, "noise_schedule": noise_schedule, "dataset_pk": dataset_pk,
             "created_at": utcnow(), **values})
        for field, want in (("version", version), ("noise_schedule", noise_schedule),
                            ("checkpoint_sha256", values.get("checkpoint_sha256"))):
            if want is not None and getattr(row, field) != want:
                raise BdgenError(f"model {model_id!r} is already recorded with {field} "
                                 f"{getattr(row, field)!r}, not {want!r}")
        return row

    def get_or_create_method(self, method: MethodSpec | str) -> int:
        """Primary key of the method row (by canonical name; inserted if new)."""
        with self.session() as s:
            return self._method(s, method_spec(method)).id

    def _method(self, s: Session, m: MethodSpec) -> MethodRow:
        f = m.fields()
        return self._get_or_create(
            s, MethodRow, {"name": m.format()},
            {"unmasking": f["unmasking"], "top_p": f["top_p"], "temperature": f["temperature"],
             "strategy": f["strategy"], "eta": f["eta"], "t_switch": f["t_switch"],
             "v2": m.v2})

    def _series(self, s: Session, model_pk: int, method_pk: int, num_samples: int,
                steps: int, constraint_set: str | None = None) -> Series:
        """The series of (model, method, size, constraint set); ``None``/"" = no set."""
        return self._get_or_create(s, Series, {"model_pk": model_pk, "method_pk": method_pk,
                                               "num_samples": num_samples, "steps": steps,
                                               "constraint_set": constraint_set or ""}, {})

    def _model_pk(self, s: Session, model_id: str) -> int:
        pk = s.scalar(select(Model.id).where(Model.model_id == model_id))
        if pk is None:
            raise BdgenError(f"model {model_id!r} is not recorded in store {redact(self.url)}")
        return pk

    def _metric_pk(self, s: Session, name: str) -> int:
        """Primary key of a metric definition; stratified keys are inserted on demand."""
        pk = self._metric_pks.get(name)
        if pk is None:
            # Refresh from committed rows only (a separate read connection), so that a
            # definition inserted by a transaction that later rolls back is never cached.
            with self.read_session() as rs:
                self._metric_pks.update(
                    (n, p) for n, p in rs.execute(select(MetricDefinition.name,
                                                         MetricDefinition.id)))
            pk = self._metric_pks.get(name)
        if pk is None:
            d: MetricDef = lookup(name)
            row = self._get_or_create(
                s, MetricDefinition, {"name": d.name},
                {"legacy_key": d.legacy_key, "group": d.group, "direction": d.direction,
                 "primary": d.primary, "displayed": d.displayed, "display": d.display,
                 "percent": d.percent, "description": d.description})
            pk = row.id
            # Not cached until committed: a rolled-back insert must not leave a stale id.
        return pk
