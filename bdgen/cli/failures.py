"""One line for an exception that is not a :class:`~bdgen.errors.BdgenError`.

Some are the environment, not a bug (a full disk, a file that cannot be read, a database
that fails): they are named plainly and exit like bad input. Anything else is a bug: its type
and first line, and the CLI adds "run with --debug for the traceback".
"""

from __future__ import annotations

import errno


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def describe(exc: BaseException) -> tuple[bool, str]:
    """``(known, line)``: ``known`` when the cause is the environment or the input."""
    orig: BaseException = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's
    filename = getattr(orig, "filename", None)
    text = _first_line(orig)
    if "disk I/O error" in text:  # SQLite's SQLITE_IOERR, e.g. a file size limit reached
        return True, ("the store could not write to its file (disk I/O error: the disk may "
                      "be full or a file size limit reached); nothing was recorded for the "
                      "failed write")
    if "database or disk is full" in text or getattr(orig, "errno", None) in (
            errno.ENOSPC, errno.EFBIG):
        where = f" ({filename})" if filename else ""
        return True, (f"the disk is full{where}: nothing was recorded for the failed write; "
                      "free some space and run the command again")
    if isinstance(orig, UnicodeDecodeError):
        return True, f"a file is not UTF-8 text ({text})"
    if isinstance(orig, OSError):
        name = f": {orig.filename}" if orig.filename else ""
        return True, f"{orig.strerror or text}{name}"
    try:
        from sqlalchemy.exc import DBAPIError
    except ImportError:  # pragma: no cover
        DBAPIError = ()  # type: ignore[assignment,misc]  # noqa: N806
    if isinstance(exc, DBAPIError):
        return True, f"the store failed: {text}"
    return False, f"unexpected {type(exc).__name__}: {text}"
