"""Which MLflow run stands for a store identity, decided once through the store.

A seed run of a legacy import, and the parent run of a result (model x method x sample
size x steps), must exist exactly once in MLflow however many processes log them at the
same time, and a process killed half-way must not leave a second run behind on retry.
MLflow cannot arbitrate (no "create if absent"), the store can
(:mod:`bdgen.store.links`): a link value is swapped atomically from "nothing" to a *claim*
``claim:<host>:<pid>:<unix time>:<nonce>``; the winner creates the run tagged ``bdgen.claim`` with
its claim, then swaps the claim for the run id. Everyone else waits for the run id.

A claim whose process is dead (same host: its pid is gone; another host: older than
:data:`CLAIM_LEASE_S`) is taken over; the new owner first adopts a run the dead one had
already created (found by its ``bdgen.claim`` tag), so a retry never duplicates it.
A link to a run the tracking store does not have (deleted, or another tracking store) is
replaced the same way.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from bdgen.store.api import Store
from bdgen.tracking import Tracker
from bdgen.tracking.mlflow_tracker import pid_alive
from bdgen.util.provenance import hostname

CLAIM_PREFIX = "claim:"
#: A claim of another host older than this is taken to be from a dead process.
CLAIM_LEASE_S = 600.0
#: How long a process waits for a live claimant to publish its run id.
WAIT_S = 300.0
_POLL_S = 0.05
CLAIM_TAG = "bdgen.claim"
#: Claims of this process whose run is being created right now.
_IN_FLIGHT: set[str] = set()


@dataclass(frozen=True)
class Link:
    """Read and compare-and-set one link value in the store."""

    read: Callable[[], str | None]
    swap: Callable[[str | None, str], str | None]


def evaluation_link(store: Store, evaluation_run_id: int) -> Link:
    """The ``mlflow_run_id`` of an evaluation row (a legacy import's seed run)."""
    return Link(lambda: store.evaluation_link(evaluation_run_id),
                lambda old, new: store.swap_evaluation_link(evaluation_run_id, old, new))


def meta_link(store: Store, tracker: Tracker, *identity: object) -> Link:
    """A ``store_meta`` link keyed by the tracking store (:attr:`Tracker.store_key`) and
    ``identity`` (a parent run)."""
    digest = hashlib.sha256("\x00".join(map(str, (tracker.store_key, *identity))).encode())
    key = "mlflow.parent:" + digest.hexdigest()[:48]
    return Link(lambda: store.meta_link(key), lambda old, new: store.swap_meta_link(key, old, new))


def new_claim() -> str:
    """A claim no other claim equals (the nonce: one process makes many per second), of at
    most 64 characters (the link columns' width)."""
    return f"{CLAIM_PREFIX}{hostname()[:24]}:{os.getpid()}:{int(time.time())}:" \
        f"{uuid.uuid4().hex[:8]}"


def claim_dead(claim: str) -> bool:
    """Whether the process that made ``claim`` is gone (see module docstring)."""
    try:
        host, pid, stamp, _ = claim[len(CLAIM_PREFIX):].rsplit(":", 3)
        pid_n, t = int(pid), int(stamp)
    except ValueError:
        return True  # not a claim this code wrote
    if host == hostname()[:24]:
        if pid_n == os.getpid():  # ours: alive only while its create() is running
            return claim not in _IN_FLIGHT
        return not pid_alive(pid_n)
    return time.time() - t > CLAIM_LEASE_S


def link_run(link: Link, tracker: Tracker, experiment: str, create: Callable[[str], str],
             wait_s: float = WAIT_S) -> tuple[str, bool]:
    """The run id linked to this identity, creating it (``create(claim) -> run id``) only
    if this process wins the claim. Returns ``(run_id, created)``; ``created`` False means
    an existing run (possibly one a dead process left unfinished: the caller completes it).
    """
    deadline = time.monotonic() + wait_s
    current = link.read()
    while True:
        if current is not None and not current.startswith(CLAIM_PREFIX):
            if tracker.run_status(current) is not None:
                return current, False
        elif current is not None and not claim_dead(current) \
                and time.monotonic() < deadline:
            time.sleep(_POLL_S)
            current = link.read()
            continue
        mine = new_claim()
        got = link.swap(current, mine)
        if got != mine:
            current = got
            continue
        adopted = tracker.find_runs(experiment, {CLAIM_TAG: current}) \
            if current is not None and current.startswith(CLAIM_PREFIX) else []
        _IN_FLIGHT.add(mine)
        try:
            run_id = adopted[0] if adopted else create(mine)
        finally:  # a create() that raised leaves a claim this process will take over
            _IN_FLIGHT.discard(mine)
        link.swap(mine, run_id)
        return run_id, not adopted
