"""Where things live: a workspace directory and the identity-derived paths inside it.

A workspace is a directory holding ``bdgen.toml`` (written by ``bdgen init``). Every artifact
path is derived from identities (dataset id, model id, method name, seed, ...), never from
command-line tags, so the same run always lands in the same place.

Layout::

    <root>/bdgen.toml                       marker + settings
    <root>/bdgen.db                         results store (SQLite default)
    <root>/mlflow.db                        MLflow tracking store (SQLite default)
    <root>/data/<dataset_id>.pt             prepared datasets
    <root>/cache/                           reference statistics and other caches
    <root>/artifacts/models/<model_id>/     checkpoints
    <root>/artifacts/samples/<model_id>/<method>/seed-<seed>_n<num>_s<steps>.pt
    <root>/reports/                         generated comparison documents
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bdgen.errors import BdgenError
from bdgen.util.atomic import atomic_write_text

MARKER = "bdgen.toml"
ENV_WORKSPACE = "BDGEN_WORKSPACE"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def db_path(self) -> Path:
        return self.root / "bdgen.db"

    @property
    def mlflow_db_path(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def dataset_path(self, dataset_id: str) -> Path:
        return self.data_dir / f"{dataset_id}.pt"

    def model_dir(self, model_id: str) -> Path:
        return self.root / "artifacts" / "models" / model_id

    def samples_path(self, model_id: str, method: str, seed: int, num_samples: int,
                     steps: int) -> Path:
        return (self.root / "artifacts" / "samples" / model_id / method
                / f"seed-{seed}_n{num_samples}_s{steps}.pt")

    @classmethod
    def find(cls, start: Path | None = None) -> Workspace:
        """The workspace of ``$BDGEN_WORKSPACE``, else the nearest one above ``start``/cwd."""
        env = os.environ.get(ENV_WORKSPACE)
        if env:
            ws = cls(Path(env).resolve())
            if not ws.marker.exists():
                raise BdgenError(
                    f"{ENV_WORKSPACE}={env} is not a bdgen workspace (no {MARKER}); "
                    f"create one with: bdgen init {env}"
                )
            return ws
        here = (start or Path.cwd()).resolve()
        for d in (here, *here.parents):
            if (d / MARKER).exists():
                return cls(d)
        raise BdgenError(
            f"not inside a bdgen workspace (no {MARKER} in {here} or above); "
            "create one with: bdgen init [DIR]"
        )


_TOML = """\
# bdgen workspace (created by `bdgen init`). Its presence marks the workspace root.
# Store:   bdgen.db here, unless BDGEN_DB_URL selects another database.
# MLflow:  mlflow.db here, unless MLFLOW_TRACKING_URI points at a tracking server.
# DVC:     this directory is a DVC repository; checkpoints and samples are `dvc add`-ed.
[workspace]
format = 1
"""

_GITIGNORE = """\
# bdgen workspace: databases and caches are not versioned (DVC tracks the artifacts)
/bdgen.db*
/mlflow.db*
/mlartifacts/
/cache/
/reports/
"""

_DVCIGNORE = """\
/bdgen.db*
/mlflow.db*
/mlartifacts/
/cache/
"""


def init_workspace(directory: str | Path, *, dvc: bool = True, mlflow: bool = True,
                   remote: str | None = None) -> Workspace:
    """Create (or complete) a workspace in ``directory``: marker, git + DVC repository with
    analytics off, results store at the current schema, and the MLflow tracking store.
    ``remote``: the DVC remote (URL or directory) checkpoints and samples are pushed to and
    pulled from (team mode, docs/TEAM.md).

    Idempotent: running it again on a workspace only fills in what is missing.
    """
    root = Path(directory).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise BdgenError(f"cannot create a workspace at {root}: it is a file")
    root.mkdir(parents=True, exist_ok=True)
    ws = Workspace(root)
    for name, text in ((".gitignore", _GITIGNORE), (".dvcignore", _DVCIGNORE)):
        if not (root / name).exists():
            atomic_write_text(root / name, text)
    if dvc:
        from bdgen.tracking.artifacts import init_dvc

        init_dvc(root)
        if remote:
            from bdgen.tracking.remote import set_remote

            set_remote(root, remote)
    elif remote:
        raise BdgenError("a DVC remote needs a DVC workspace (drop --no-dvc)")
    from bdgen.pipeline.store import open_store  # (pipeline.store imports this module)

    open_store(workspace=ws).close()  # creates or upgrades the schema
    if mlflow:
        from bdgen.tracking.mlflow_tracker import create_store, default_tracking_uri

        create_store(default_tracking_uri(root))
    if not ws.marker.exists():
        atomic_write_text(ws.marker, _TOML)  # last: a half-made workspace is not found as one
    return ws
