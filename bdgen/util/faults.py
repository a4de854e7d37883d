"""Deterministic fault injection for kill tests: ``BDGEN_FAULT=<point>:<k>`` makes the
process SIGKILL itself the k-th time (1-based) it reaches ``fault_point("<point>")``.

Why a hook and not a timer: a test that kills "after 2 s" lands at a different place on
every machine; a named point in the code lands at the same place every time. Unset (the
normal case) it costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "BDGEN_FAULT"
_seen: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Kill this process (SIGKILL: no cleanup, like the OOM killer) if ``$BDGEN_FAULT``
    names this point and this is its k-th visit."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, k = spec.rpartition(":")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(k or 1):
        os.kill(os.getpid(), signal.SIGKILL)
