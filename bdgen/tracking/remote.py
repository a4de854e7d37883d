"""A workspace's DVC remote: where checkpoints, datasets and samples go between machines.

DVC's remote is content-addressed (by md5): it holds the files, not their names. The
workspace's ``.dvc`` pointer files (path -> md5) are not committed anywhere shared, so
:func:`push` also uploads each pointer under ``bdgen-pointers/<path>.dvc`` in the remote,
and :func:`pull` on another machine lists them, writes them into its workspace and lets
``dvc pull`` fetch (and md5-check) the files. Any remote DVC supports works the same way
(a local or shared directory, ssh, s3, ...), since only DVC's own filesystem is used.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from bdgen.errors import BdgenError
from bdgen.tracking.artifacts import _quiet_dvc, dvc_env, is_dvc_repo

REMOTE_NAME = "bdgen"
POINTERS = "bdgen-pointers"


@dataclass(frozen=True)
class Transfer:
    """What a push or pull moved: artifact paths (relative to the workspace) and how many
    files were sent (push: DVC's count) or were not here before (pull)."""

    paths: list[str]
    files_transferred: int


def _repo(root: Path):
    if not is_dvc_repo(root):
        raise BdgenError(f"{root} is not a DVC repository (a workspace made with --no-dvc "
                         "has no remote; re-create it with `bdgen init`)")
    dvc_env(root)
    from dvc.repo import Repo

    return Repo(str(root), _wait_for_lock=True)


def normalise_url(url: str) -> str:
    """A remote URL as DVC stores it: plain paths made absolute (so the same remote is named
    the same way from any working directory), URLs with a scheme left alone."""
    if urlparse(url).scheme in ("", "file"):
        path = urlparse(url).path if url.startswith("file://") else url
        return str(Path(path).expanduser().resolve())
    return url


def set_remote(root: str | Path, url: str) -> str:
    """Make ``url`` the workspace's default DVC remote (named ``bdgen``); returns the URL as
    stored. A local directory is created if missing."""
    url = normalise_url(url)
    if not urlparse(url).scheme:
        Path(url).mkdir(parents=True, exist_ok=True)
    with _repo(Path(root)) as repo, repo.config.edit() as conf:
        conf["remote"][REMOTE_NAME] = {"url": url}
        conf["core"]["remote"] = REMOTE_NAME
    return url


def remote_url(root: str | Path) -> str | None:
    """The workspace's default remote URL, or None when it has none."""
    with _repo(Path(root)) as repo:
        name = repo.config["core"].get("remote")
        return repo.config["remote"].get(name, {}).get("url") if name else None


def _default_remote(repo):
    from dvc.exceptions import DvcException

    try:
        return repo.cloud.get_remote()
    except DvcException:
        raise BdgenError("the workspace has no DVC remote: `bdgen init --remote URL` (or "
                         "`dvc remote add -d NAME URL` in the workspace)") from None


def pointer_files(root: Path) -> list[Path]:
    """Every ``.dvc`` pointer file of the workspace (DVC's own directory excluded)."""
    return sorted(p for p in root.rglob("*.dvc")
                  if p.is_file() and ".dvc" not in p.relative_to(root).parts[:-1])


def push(root: str | Path) -> Transfer:
    """``dvc push`` every tracked artifact, then upload its pointer to the remote."""
    from dvc.exceptions import DvcException

    root = Path(root).resolve()
    pointers = pointer_files(root)
    with _repo(root) as repo:
        remote = _default_remote(repo)
        try:
            with _quiet_dvc():
                sent = repo.push(targets=[str(p) for p in pointers]) if pointers else 0
        except DvcException as exc:
            raise BdgenError(f"dvc push failed: {exc}") from None
        for p in pointers:
            rel = p.relative_to(root).as_posix()
            dest = posixpath.join(remote.path, POINTERS, rel)
            remote.fs.makedirs(posixpath.dirname(dest), exist_ok=True)
            remote.fs.pipe_file(dest, p.read_bytes())
    return Transfer([p.relative_to(root).as_posix()[:-len(".dvc")] for p in pointers], sent)


def pull(root: str | Path) -> Transfer:
    """Write every pointer the remote has into the workspace, then ``dvc pull`` the files
    (DVC checks each file's md5 against its pointer)."""
    from dvc.exceptions import DvcException

    root = Path(root).resolve()
    with _repo(root) as repo:
        remote = _default_remote(repo)
        base = posixpath.join(remote.path, POINTERS)
        found = list(remote.fs.find(base)) if remote.fs.exists(base) else []
        rels = sorted(posixpath.relpath(f, base) for f in found if f.endswith(".dvc"))
        missing = sum(not (root / r[:-len(".dvc")]).is_file() for r in rels)
        for rel in rels:
            local = root / rel
            if ".." in Path(rel).parts:
                raise BdgenError(f"remote pointer {rel} points outside the workspace")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(remote.fs.cat_file(posixpath.join(base, rel)))
        try:
            with _quiet_dvc():
                if rels:
                    repo.pull(targets=[str(root / r) for r in rels])
        except DvcException as exc:
            raise BdgenError(f"dvc pull failed: {exc}") from None
    paths = [r[:-len(".dvc")] for r in rels]
    absent = [p for p in paths if not (root / p).is_file()]
    if absent:
        raise BdgenError(f"dvc pull did not restore {len(absent)} file(s), e.g. {absent[0]} "
                         "(pushed from a workspace that had not pushed its data?)")
    return Transfer(paths, missing)
