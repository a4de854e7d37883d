"""Atomic file writes: a temp file in the target's directory, then ``os.replace``.

Every file bdgen writes for others to read (datasets, checkpoints, samples files, results,
receipts, reports) goes through here, so an interrupted or failing write never leaves a
partial file under the final name, and a failed write removes its temp file. The file gets
the permissions ``open()`` would give it: an existing file's mode is kept, a new file gets
``0o666 & ~umask`` (``mkstemp`` alone would leave every file ``-rw-------``).

A process killed mid-write (SIGKILL: no cleanup runs) leaves its temp file behind. Temp
names carry the writer's pid and host (``.<name>.<pid>@<host>.<random>.tmp``), so the next
write of the same file removes the temp files of writers on this host that are gone,
leaving those of live writers (and of other hosts) alone.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from bdgen.util.faults import fault_point

#: A temp file without a pid in its name (older bdgen) is stale after this long.
_UNNAMED_STALE_S = 3600.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Temp files of earlier writes of ``path`` whose writer is gone (this host only)."""
    path = Path(path)
    prefix, host, out = f".{path.name}.", socket.gethostname(), []
    if not path.parent.is_dir():
        return []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        rest = tmp.name[len(prefix):-len(".tmp")]
        pid_text, at, tail = rest.partition("@")
        if at:
            if pid_text.isdigit() and tail.rsplit(".", 1)[0] == host and not _alive(
                    int(pid_text)):
                out.append(tmp)
        else:
            try:
                if time.time() - tmp.stat().st_mtime > _UNNAMED_STALE_S:
                    out.append(tmp)
            except OSError:
                pass
    return out


def remove_stale_temp_files(path: str | os.PathLike) -> int:
    """Remove :func:`stale_temp_files` of ``path``; how many were removed."""
    n = 0
    for tmp in stale_temp_files(path):
        try:
            tmp.unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n


def current_umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", fsync: bool = True) -> Iterator[IO]:
    """Yield a handle on a temp file beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}@{socket.gethostname()}.",
                               suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _final_mode(path))
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        fault_point("atomic.before_replace")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any, **dump_kwargs: Any) -> None:
    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, **dump_kwargs)
        fh.write("\n")


def canonical(obj: Any) -> Any:
    """A fresh copy of a plain structure (dict, list, tuple, str; other leaves as they are)
    with every string interned and no container shared.

    Pickle memoises by object identity, so two equal structures whose strings or tuples
    are shared differently (a dict key written as a literal vs one read back from a file)
    pickle to different bytes. The canonical copy makes the bytes a function of the value:
    a checkpoint resumed from disk equals, byte for byte, the one of a straight run.
    """
    if isinstance(obj, str):
        return sys.intern(str(obj))
    if isinstance(obj, dict):
        return {canonical(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(canonical(v) for v in obj)
    return obj


def torch_bytes(obj: Any) -> bytes:
    """``torch.save`` of :func:`canonical` of ``obj``, in memory (equal values, equal bytes)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(canonical(obj), buf)
    return buf.getvalue()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Write :func:`torch_bytes` of ``obj`` atomically."""
    atomic_write_bytes(path, torch_bytes(obj))
