"""Team mode (docs/TEAM.md): artifacts between workspaces that share one results store.

Researchers share the store (PostgreSQL, ``BDGEN_DB_URL``) and an MLflow server
(``MLFLOW_TRACKING_URI``); files travel through the workspace's DVC remote. ``bdgen push``
sends every DVC-tracked artifact; ``bdgen pull`` fetches them all into another workspace
and checks every file against what the store recorded (sha256 of each checkpoint and
samples file), so a file that differs from the one the results were computed on is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from bdgen.errors import BdgenError
from bdgen.pipeline.store import open_store
from bdgen.pipeline.workspace import Workspace
from bdgen.tracking import remote
from bdgen.util.hashing import file_digests


@dataclass(frozen=True)
class PullSummary:
    paths: list[str]        # every artifact the remote has, now in the workspace
    fetched: int            # files downloaded (0 when all were already here)
    verified: int           # files checked against the store's sha256

    def line(self) -> str:
        return (f"pulled {len(self.paths)} artifact(s) ({self.fetched} downloaded); "
                f"{self.verified} checked against the store's sha256")


def push_workspace(ws: Workspace) -> remote.Transfer:
    """Every DVC-tracked artifact of ``ws`` (and its pointer) to the default remote."""
    return remote.push(ws.root)


def expected_sha256(ws: Workspace, paths: list[str]) -> dict[str, str]:
    """Artifact path -> the sha256 the store recorded for it (checkpoints and samples)."""
    with open_store(workspace=ws) as store:
        known: dict[str, str] = {}
        for mid in store.model_ids():
            ck = store.model_checkpoint(mid)
            if ck is not None and ck.path and ck.sha256:
                known[ck.path] = ck.sha256
        for path, run_id in store.generation_runs_by_path(paths).items():
            sha = store.generation_run(run_id).samples_sha256
            if sha:
                known[path] = sha
    return {p: known[p] for p in paths if p in known}


def pull_workspace(ws: Workspace) -> PullSummary:
    """Fetch every artifact of the remote into ``ws``, then verify each one the store knows
    against its recorded sha256 (BdgenError naming the first mismatch)."""
    got = remote.pull(ws.root)
    expected = expected_sha256(ws, got.paths)
    for path, sha in sorted(expected.items()):
        _, actual = file_digests(ws.root / path)
        if actual != sha:
            raise BdgenError(f"{path}: sha256 {actual[:12]}... differs from the store's "
                             f"{sha[:12]}...; the remote holds another file than the one the "
                             "results were computed on")
    return PullSummary(got.paths, got.files_transferred, len(expected))
