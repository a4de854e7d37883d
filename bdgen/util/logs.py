"""How the command line shows library messages: the library only logs (quiet by default);
a command turns its messages into plain lines on the terminal.

Library modules log with ``logging.getLogger(__name__)``. :func:`console_logging` shows the
pipeline's INFO messages (what a job did: "... seed 42: already done, skipped") as plain
lines on stdout, and WARNING and above from any bdgen module on stderr. A progress bar on
the terminal is cleared and redrawn around each line (``tqdm.write``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: Loggers whose INFO messages a command shows (the rest of bdgen: WARNING and up).
INFO_LOGGERS = ("bdgen.pipeline", "bdgen.progress")
#: Loggers whose messages go to stderr whatever their level (progress: stdout may be data).
STDERR_LOGGERS = ("bdgen.progress",)


class _ConsoleHandler(logging.Handler):
    """The message only, on the current ``sys.stdout`` (INFO) or ``sys.stderr`` (WARNING+),
    looked up at each record so that a replaced stream (Click's test runner) is honoured."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            stream = sys.stderr if (record.levelno >= logging.WARNING
                                    or record.name in STDERR_LOGGERS) else sys.stdout
            tqdm.write(self.format(record), file=stream)
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


@contextmanager
def console_logging() -> Iterator[None]:
    """Show bdgen's messages on the terminal while the block runs (the CLI wraps every
    command in it); the previous logging set-up is restored afterwards."""
    root = logging.getLogger("bdgen")
    handler = _ConsoleHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved = [(root, root.level, root.propagate)]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    root.propagate = False
    for name in INFO_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for logger, level, propagate in saved:
            logger.setLevel(level)
            logger.propagate = propagate
