"""The schema revision this code expects, read from the migration scripts without Alembic.

Importing Alembic costs ~0.4 s; a store that is already current (the usual case for every
read command) and ``bdgen --version`` only need the head revision's name, which is the one
``revision = "..."`` no other script names as its ``down_revision``. Alembic itself is
imported only to upgrade (:mod:`bdgen.store.migrate`); a test checks both agree.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_ASSIGN = re.compile(r"^(revision|down_revision)\s*(?::[^=]+)?=\s*['\"]?([^'\"\s]+)['\"]?",
                     re.M)


@cache
def head_revision() -> str | None:
    """The head revision of the migration scripts (None when there are none)."""
    revisions, parents = set(), set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        found: dict[str, str] = {m.group(1): m.group(2) for m in _ASSIGN.finditer(text)}
        if "revision" in found:
            revisions.add(found["revision"])
            if found.get("down_revision") not in (None, "None"):
                parents.add(found["down_revision"])
    heads = sorted(revisions - parents)
    return heads[0] if len(heads) == 1 else None


HEAD_REVISION = head_revision()
