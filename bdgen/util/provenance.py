"""Which code made a record and where: one rule for the store rows and the MLflow tags."""

from __future__ import annotations

import functools
import socket
import subprocess
from pathlib import Path

import bdgen

_GIT_TIMEOUT_S = 10


@functools.cache
def git_commit() -> str | None:
    """The commit of the bdgen source checkout, or None outside a git checkout."""
    root = Path(bdgen.__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                             capture_output=True, text=True,
                             timeout=_GIT_TIMEOUT_S).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha if len(sha) == 40 else None


@functools.cache
def code_version() -> str:
    """``<commit>``, or ``<commit>-dirty`` when files under ``bdgen/`` differ from it, in a
    git checkout; else the package version (an installed wheel).

    "-dirty" matters: numbers made by uncommitted code cannot be reproduced from the
    commit alone, so every record says so.
    """
    sha = git_commit()
    if sha is None:
        return bdgen.__version__
    root = Path(bdgen.__file__).resolve().parents[1]
    try:
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "bdgen"],
                               capture_output=True, text=True,
                               timeout=_GIT_TIMEOUT_S).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return f"{sha}-dirty" if dirty else sha


@functools.cache
def hostname() -> str:
    return socket.gethostname()
