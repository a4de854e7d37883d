"""The package's layering (docs/DEVELOPING.md), checked on the import statements.

The science layers run on a GPU box that has only torch, so they import no store, tracking
or pipeline code; the database is reached only through ``bdgen.store`` and MLflow/DVC only
through ``bdgen.tracking``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCIENCE = ("bdgen/data", "bdgen/model", "bdgen/diffusion", "bdgen/eval", "bdgen/report",
           "bdgen/util")
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
