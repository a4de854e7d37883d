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

# Triton kernels (bdgen/model/short_attention.py) run in Triton's interpreter where there is
# no GPU; it must be chosen before Triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
LEGACY_DIR = os.path.abspath(os.path.join(SHARED, "legacy_eval_results", "loglinear_noise_sc"))


@pytest.fixture(scope="session", autouse=True)
def _stage_servers(tmp_path_factory):
    """The warm stage servers that `dvc repro` in tests starts (bdgen.pipeline.stage_server)
    live in the session's own folder, go after 30 idle seconds, and are stopped at the end."""
    from bdgen.pipeline.stage_server import stop_servers

    folder = tmp_path_factory.mktemp("stage-servers")
    os.environ["BDGEN_WARM_DIR"], os.environ["BDGEN_WARM_IDLE"] = str(folder), "30"
    yield
    stop_servers(folder)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """A one-model pipeline folder after `dvc repro train` (_study_support.trained_pipeline),
    made once: tests copy it (shutil.copytree) before they change it."""
    from _study_support import trained_pipeline

    repo = tmp_path_factory.mktemp("tiny-pipeline")
    trained_pipeline(repo)
    return repo


@pytest.fixture(scope="session")
def legacy_dir() -> str:
    """The real legacy result files (format_version 2) shipped beside the repo."""
    if not os.path.isdir(LEGACY_DIR):
        pytest.skip(f"legacy results not found at {LEGACY_DIR}")
    return LEGACY_DIR


@pytest.fixture(scope="session")
def read_only_legacy_db(tmp_path_factory, legacy_dir) -> str:
    """A SQLite store holding the 22 legacy results, imported once for the tests that only
    read it (a module that writes to its store builds its own)."""
    from bdgen.store.api import Store

    path = str(tmp_path_factory.mktemp("legacy-db") / "legacy.db")
    with Store.open(path) as store:
        store.import_result_files([legacy_dir])
    return path


@pytest.fixture(autouse=True)
def _isolated_tracking_env():
    """Each test sees the MLflow/bdgen environment it started with (no leaks between tests)."""
    keys = ("MLFLOW_TRACKING_URI", "BDGEN_WORKSPACE", "BDGEN_DB_URL")
    saved = {k: os.environ.get(k) for k in keys}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
