"""Content hashes of files and of JSON-able configs (identities of datasets, models, runs)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

_CHUNK = 1 << 20


def _file_digest(path: str | Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes."""
    return _file_digest(path, "sha256")


def file_md5(path: str | Path) -> str:
    """md5 hex digest of a file's bytes (DVC's content address)."""
    return _file_digest(path, "md5")


def config_hash(config: object) -> str:
    """sha256 of the canonical JSON of a config (sorted keys, no whitespace)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
