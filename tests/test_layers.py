"""The package's layering (docs/DEVELOPING.md), checked on the import statements.

The science layers run on a GPU box that has only torch, so they import no store, tracking
or pipeline code; the database is reached only through ``bdgen.store`` and MLflow/DVC only
through ``bdgen.tracking``; and the platform layers are ordered
cli -> pipeline -> report | store | tracking -> science, so no cycle between packages can
come back (the store once imported the pipeline to find its workspace).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCIENCE = ("bdgen/data", "bdgen/model", "bdgen/diffusion", "bdgen/eval", "bdgen/report",
           "bdgen/util", "bdgen/guidance")
#: Package -> rank: a module may import its own package and packages of a lower rank; the
#: platform peers (report, store, tracking) do not import each other, the science packages
#: (rank 1) may. ``bdgen.util`` holds shared helpers that import only ``bdgen.errors``.
RANKS = {"cli": 4, "pipeline": 3, "report": 2, "store": 2, "tracking": 2,
         "data": 1, "model": 1, "diffusion": 1, "eval": 1, "guidance": 1,
         "util": 0, "errors": -1}
SCIENCE_RANK = 1
PLATFORM = ("mlflow", "sqlalchemy", "alembic", "dvc", "bdgen.store", "bdgen.tracking",
            "bdgen.pipeline")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (REPO / d).rglob("*.py"))


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("path", _modules(*SCIENCE), ids=lambda p: str(p.relative_to(REPO)))
def test_science_layers_import_no_platform_code(path: Path) -> None:
    bad = sorted(n for n in _imports(path) if _under(n, PLATFORM))
    assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_database_only_through_the_store_and_mlflow_dvc_only_through_tracking() -> None:
    offenders = []
    for path in _modules("bdgen"):  # bench/ times the store and MLflow themselves
        rel = path.relative_to(REPO).as_posix()
        for name in _imports(path):
            if _under(name, ("sqlalchemy", "alembic", "bdgen.store.models")) and not (
                    rel.startswith("bdgen/store/") or name == "sqlalchemy.exc"):
                offenders.append(f"{rel}: {name}")
            if _under(name, ("mlflow", "dvc")) and not rel.startswith("bdgen/tracking/"):
                offenders.append(f"{rel}: {name}")
    assert not offenders, offenders


def _package(name: str) -> str | None:
    """``bdgen.store.api`` -> ``store``; ``bdgen`` -> ``""``; not bdgen -> None."""
    if name == "bdgen":
        return ""
    if not name.startswith("bdgen."):
        return None
    return name.split(".")[1]


@pytest.mark.parametrize("path", _modules("bdgen"), ids=lambda p: str(p.relative_to(REPO)))
def test_platform_layers_import_only_downwards(path: Path) -> None:
    rel = path.relative_to(REPO)
    own = rel.parts[1].removesuffix(".py") if len(rel.parts) > 2 else ""
    if own not in RANKS:  # bdgen/__init__.py, bdgen/errors.py
        return
    bad = []
    for name in _imports(path):
        pkg = _package(name)
        if pkg is None or pkg == own or pkg == "":
            continue
        assert pkg in RANKS, f"{rel} imports {name}: package {pkg!r} has no layer in RANKS"
        if RANKS[pkg] > RANKS[own] or (RANKS[pkg] == RANKS[own] != SCIENCE_RANK):
            bad.append(name)
    assert not bad, f"{rel} ({own}) imports {sorted(bad)}, which are not below it"
