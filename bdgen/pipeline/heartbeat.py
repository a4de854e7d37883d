"""Keeping a claim alive while its job works: a daemon thread renews the claim's heartbeat
every ``ttl / 4`` (:mod:`bdgen.store.claims`), and SIGTERM becomes an exception so a
terminated job fails its rows and closes its MLflow run like any other failure."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from bdgen.errors import BdgenError
from bdgen.store.api import Store
from bdgen.store.claims import Claim, claim_ttl

log = logging.getLogger(__name__)


class JobTerminated(BdgenError):
    """The job received SIGTERM (raised in the main thread, so cleanup runs)."""


class Heartbeat:
    """Renews ``claim`` in the background until the ``with`` block ends; ``lost`` tells
    whether another process took it over meanwhile (this one was frozen past the expiry)."""

    def __init__(self, store: Store, claim: Claim | None, interval_s: float | None = None):
        self.store, self.claim = store, claim
        self.interval_s = interval_s or claim_ttl().total_seconds() / 4
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        assert self.claim is not None
        while not self._stop.wait(self.interval_s):
            try:
                if not self.store.renew_claim(self.claim):
                    self.lost = True
                    log.warning("claim %s %s was taken over by another process",
                                self.claim.kind, self.claim.key)
                    return
            except Exception as exc:  # a transient database error: try again next beat
                log.warning("heartbeat of claim %s %s failed: %s", self.claim.kind,
                            self.claim.key, str(exc).splitlines()[0] if str(exc) else exc)

    def __enter__(self) -> Heartbeat:
        if self.claim is not None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"heartbeat-{self.claim.kind}")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@contextmanager
def sigterm_as_exception() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`JobTerminated` in the main thread (outside
    the main thread, or nested, nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:  # an outer block (or the embedding program) has it
        yield
        return

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise JobTerminated("terminated by SIGTERM; the run was marked failed and will be "
                            "redone by the next attempt")

    signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
