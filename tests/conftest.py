"""Shared test settings: quiet, offline, single-threaded torch, real backends only."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GIT_AUTHOR_NAME", "bdgen-tests")
os.environ.setdefault("GIT_AUTHOR_EMAIL", "tests@bdgen.invalid")
os.environ.setdefault("GIT_COMMITTER_NAME", "bdgen-tests")
os.environ.setdefault("GIT_COMMITTER_EMAIL", "tests@bdgen.invalid")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
LEGACY_DIR = os.path.abspath(os.path.join(SHARED, "legacy_eval_results", "loglinear_noise_sc"))


@pytest.fixture(scope="session")
def legacy_dir() -> str:
    """The real legacy result files (format_version 2) shipped beside the repo."""
    if not os.path.isdir(LEGACY_DIR):
        pytest.skip(f"legacy results not found at {LEGACY_DIR}")
    return LEGACY_DIR
