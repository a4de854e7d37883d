"""Deterministic fault injection: ``$BDGEN_FAULT=<point>:<k>[,<point>:<k>...]`` makes the
process kill itself with SIGKILL the k-th time it passes the named point (k >= 1);
``<point>:<k>:term`` sends SIGTERM instead (the graceful path: the job fails its rows);
``<point>:<k>:stop`` sends SIGSTOP: the whole process freezes there (every thread, the
claim-renewing heartbeat included), as a real stall would (a swapped-out or suspended host),
until something sends it SIGCONT; then it carries on from that point. The signal goes to
the thread at the point (``pthread_kill``), so that thread stops there even when it is not
the main thread (a sweep's sampling thread); the other threads stop a moment later,
wherever they are (rarely, inside a store transaction: the store stays locked meanwhile).
How a holder frozen past its claim's lease, whose work another process took over, is
tested.

Kill-safety tests use it instead of sleeps: the kill lands exactly where they ask, every
time. With the variable unset a fault point costs one environment lookup.

Points (where :func:`fault_point` is called):

========================  ==============================================================
``atomic.before_replace`` a temp file fully written, not yet renamed (``util.atomic``)
``generate.sampled``      a (method, seed) sampled, before its samples file is written
                          (and before the holder checks its claim: ``bdgen generate``
                          and a sweep's sampling unit alike)
``generate.file_written`` a samples file written (and DVC-tracked), before the store row
``evaluate.computed``     a run's metrics computed, before the store row / MLflow run
``denoising.computed``    a model's denoising metrics computed, before they are recorded
``train.step``            after every logged training step (k counts log lines)
``train.log-row``         a training-log row (loss or validation) handed to MLflow's
                          live buffer (``pipeline.tracked_train``; k counts rows)
``import.file``           a result file imported into the store, before its MLflow runs
``sample_unit.between_seeds`` a study's sampling unit, after its first seed's file
========================  ==============================================================

``$BDGEN_FAULT_ONCE=<file>``: the kill happens only in the process that creates ``<file>``
first, so a retried task (a fresh process whose counts start again) passes: how the Ray
engine's retry is tested.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

ENV_FAULT = "BDGEN_FAULT"
ENV_FAULT_ONCE = "BDGEN_FAULT_ONCE"
_hits: Counter[str] = Counter()


#: ``<point>:<k>:<suffix>`` -> the signal sent (no suffix: SIGKILL).
SUFFIXES = {"term": signal.SIGTERM, "stop": signal.SIGSTOP}


def _targets(spec: str) -> dict[str, tuple[int, signal.Signals]]:
    out: dict[str, tuple[int, signal.Signals]] = {}
    for item in spec.split(","):
        item = item.strip()
        sig = signal.SIGKILL
        head, _, suffix = item.rpartition(":")
        if suffix in SUFFIXES:
            item, sig = head, SUFFIXES[suffix]
        point, _, k = item.rpartition(":")
        if point and k.isdigit():
            out[point] = (int(k), sig)
    return out


def fault_point(name: str) -> None:
    """Kill (or terminate, or stop) this process if ``$BDGEN_FAULT`` asks for it at this
    pass of ``name``."""
    spec = os.environ.get(ENV_FAULT)
    if not spec:
        return
    _hits[name] += 1
    target = _targets(spec).get(name)
    if target is not None and target[0] == _hits[name]:
        once = os.environ.get(ENV_FAULT_ONCE)
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return  # fired already (in an earlier attempt)
        if target[1] == signal.SIGSTOP:
            # at this very thread: kill() to the process lets a thread other than the main
            # one run on (past this point) until the thread the kernel picked stops the rest
            signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
        else:
            os.kill(os.getpid(), target[1])
ENV = ENV_FAULT  # name used by the tracking branch
