"""Content hashes of files and of JSON-able configs (identities of datasets, models, runs)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bdgen.errors import BdgenError

_CHUNK = 1 << 20


def file_digests(path: str | Path) -> tuple[str, str]:
    """(md5, sha256) of a file in one pass: DVC addresses content by md5, the store and
    MLflow record the sha256. An unreadable file is a :class:`BdgenError`."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                md5.update(chunk)
                sha.update(chunk)
    except OSError as exc:
        raise BdgenError(f"cannot read artifact {path}: {exc.strerror}") from None
    return md5.hexdigest(), sha.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def config_hash(config: object) -> str:
    """sha256 of the canonical JSON of a config (sorted keys, no whitespace)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
