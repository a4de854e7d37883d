"""DVC tracking of workspace artifacts (checkpoints, samples files).

A workspace is its own git + DVC repository (``bdgen init``). Each artifact is added with
``dvc add`` through DVC's Python API, which writes ``<file>.dvc`` beside it and copies the file
into the workspace's DVC cache, so ``dvc push``/``dvc pull`` can move it between machines.
The md5 (DVC's own content hash) and the sha256 (what the store and MLflow record) are
returned together in an :class:`ArtifactRef`.

Concurrency: DVC holds a repository lock while adding; several bdgen processes (a parallel
sweep) wait for it instead of failing (``_wait_for_lock``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bdgen.errors import BdgenError
from bdgen.util.hashing import file_digests


@dataclass(frozen=True)
class ArtifactRef:
    """A DVC-tracked file: path relative to the workspace root, and its content hashes."""

    path: str
    md5: str
    sha256: str

    def tags(self, name: str) -> dict[str, str]:
        """MLflow tags naming this artifact (``bdgen.artifact.<name>.{path,md5,sha256}``)."""
        prefix = f"bdgen.artifact.{name}"
        return {f"{prefix}.path": self.path, f"{prefix}.md5": self.md5,
                f"{prefix}.sha256": self.sha256}


def dvc_env(root: Path) -> None:
    """Analytics off; DVC's site cache inside the workspace instead of the system temp dir."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("DVC_SITE_CACHE_DIR", str(Path(root) / ".dvc" / "tmp" / "site-cache"))


@contextmanager
def _quiet_dvc() -> Iterator[None]:
    """DVC's console hints ("To track the changes with git, run: ...") are noise for bdgen
    users: the workspace's .dvc files are its own business."""
    import logging

    logger = logging.getLogger("dvc")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def is_dvc_repo(root: Path) -> bool:
    return (Path(root) / ".dvc").is_dir()


def track(root: str | Path, path: str | Path) -> ArtifactRef:
    """``dvc add`` ``path`` (inside workspace ``root``) and return its hashes.

    The md5 recorded by DVC in ``<path>.dvc`` is checked against our own digest, so what the
    store records is exactly what DVC can restore. Without a DVC repo in ``root`` (a workspace
    created with ``--no-dvc``) only the hashes are computed.
    """
    root = Path(root).resolve()
    path = Path(path).resolve()
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        raise BdgenError(f"artifact {path} is outside the workspace {root}") from None
    md5, sha = file_digests(path)
    if not is_dvc_repo(root):
        return ArtifactRef(rel, md5, sha)
    dvc_env(root)
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with _quiet_dvc(), Repo(str(root), _wait_for_lock=True) as repo:
            stages = repo.add(str(path))
    except DvcException as exc:
        raise BdgenError(f"dvc add {rel} failed: {exc}") from None
    dvc_md5 = stages[0].outs[0].hash_info.value if stages and stages[0].outs else None
    if dvc_md5 != md5:
        raise BdgenError(f"dvc add {rel}: DVC recorded md5 {dvc_md5}, file has {md5} "
                         "(was the file modified while it was being added?)")
    return ArtifactRef(rel, md5, sha)


def dvc_file(path: str | Path) -> Path:
    """The ``.dvc`` file DVC writes beside a tracked artifact."""
    p = Path(path)
    return p.with_name(p.name + ".dvc")


def init_dvc(root: str | Path) -> None:
    """Make ``root`` a git + DVC repository with analytics off (idempotent).

    ``root`` gets its own git repository unless it already sits, not git-ignored, inside
    one (then DVC is initialised with ``--subdir``): a workspace inside a checkout of bdgen is
    git-ignored there, and DVC refuses ``.dvc`` files that git ignores.
    """
    import subprocess

    root = Path(root).resolve()
    dvc_env(root)
    if is_dvc_repo(root):
        return

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)

    top = git("rev-parse", "--show-toplevel")
    inside = top.returncode == 0
    subdir = inside and Path(top.stdout.strip()).resolve() != root \
        and git("check-ignore", "-q", ".").returncode != 0
    if not inside or (Path(top.stdout.strip()).resolve() != root and not subdir):
        res = git("init", "-q")
        if res.returncode != 0:
            raise BdgenError(f"git init {root} failed: {res.stderr.strip()}")
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with _quiet_dvc():
            Repo.init(str(root), subdir=subdir)
        with Repo(str(root)) as repo, repo.config.edit() as conf:
            conf["core"]["analytics"] = False
            conf["core"]["autostage"] = False
    except DvcException as exc:
        raise BdgenError(f"dvc init {root} failed: {exc}") from None
