"""Reading small YAML input files (profiles, expectations) with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bdgen.errors import BdgenError


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed YAML of ``path``; a missing, unreadable, non-UTF-8 or malformed file is a
    :class:`BdgenError` naming the file and ``what`` it should have been."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BdgenError(f"{path}: cannot read {what}: not UTF-8 text (byte {exc.start})") \
            from None
    except OSError as exc:
        raise BdgenError(f"{path}: cannot read {what} ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BdgenError(f"{path}: cannot read {what}: bad YAML{at} ({problem})") from None
