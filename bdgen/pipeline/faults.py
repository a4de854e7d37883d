"""Deterministic fault injection for tests: a process kills itself with SIGKILL at a named
point, as a crashed worker or a lost host would, instead of a test racing a timer.

``BDGEN_FAULT=<point>`` arms the point; with ``BDGEN_FAULT_ONCE=<file>`` the first process
to reach it creates ``<file>`` and dies, later ones (the retry) pass. Unset: a no-op.
"""

from __future__ import annotations

import os
import signal

ENV_FAULT = "BDGEN_FAULT"
ENV_FAULT_ONCE = "BDGEN_FAULT_ONCE"


def maybe_fault(point: str) -> None:
    """SIGKILL this process if ``$BDGEN_FAULT`` names ``point`` (once, see module doc)."""
    if os.environ.get(ENV_FAULT) != point:
        return
    once = os.environ.get(ENV_FAULT_ONCE)
    if once:
        try:
            fd = os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
