"""The large-store layout that ``bench/store.py`` and ``bench/leaderboard.py`` build: 100
methods x 5 seeds per model, models named ``bench-v1-loglinear-NNNN``, each evaluation with
the 46 legacy per-seed scalars + 4 stratified keys."""

from __future__ import annotations

from bdgen.diffusion.method import Method
from bdgen.eval.registry import LEGACY_PER_SEED_ORDER

SEEDS = (42, 123, 456, 789, 1337)
STRATIFIED = tuple(f"validity_by_num_rooms/{n}/overall" for n in (5, 6, 7, 8))
METRIC_KEYS = (*LEGACY_PER_SEED_ORDER, *STRATIFIED)


def methods() -> list[str]:
    """100 distinct valid method names: random and LLaDA unmasking, top-p 0.5 to 0.95,
    five remasking settings each."""
    remask = [{}, {"remasking": "cap", "eta": 0.2}, {"remasking": "cap", "eta": 0.4},
              {"remasking": "confidence", "t_switch": 0.5}, {"remasking": "confidence"}]
    return [Method(u, top_p=round(0.5 + 0.05 * i, 2), **r).format()
            for u in ("random", "llada") for i in range(10) for r in remask]


def model_ids(n: int) -> list[str]:
    return [f"bench-v1-loglinear-{i:04d}" for i in range(n)]


def generation_rows(series: list[int], limit: int) -> list[dict]:
    """A succeeded generation run row for every seed of every series, at most ``limit``."""
    return [{"series_pk": spk, "seed": seed, "status": "succeeded", "no_mlflow": True,
             "provenance": "bdgen", "code_version": "bench"}
            for spk in series for seed in SEEDS][:limit]


def settle_sqlite(store) -> None:
    """ANALYZE and truncate the WAL of a SQLite store (autocommit: no transaction around
    these); nothing on another backend."""
    if store.engine.dialect.name == "sqlite":
        raw = store.engine.raw_connection()
        try:
            raw.execute("ANALYZE")
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
