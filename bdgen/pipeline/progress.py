"""Progress of long jobs: a bar on a terminal, a heartbeat line when there is none.

Under ``dvc repro`` or in a CI log there is no terminal, and a job silent for minutes looks
hung. :class:`Progress` shows a tqdm bar (with the item being worked on) when stderr is a
terminal; otherwise a background thread logs one line at least every ``interval`` seconds
(``$BDGEN_HEARTBEAT_S``, default 10) with the count done, the current item and the elapsed
time, whether or not the job itself reported anything since. Any job can use it::

    with Progress(total=len(runs), desc="evaluate", unit="run") as p:
        for run in runs:
            p.status(run.name)
            ...
            p.advance()
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TypeVar

#: Heartbeat lines go to stderr when the CLI shows them (bdgen.util.logs): stdout may be
#: a JSON document.
log = logging.getLogger("bdgen.progress")
T = TypeVar("T")
DEFAULT_INTERVAL_S = 10.0


def heartbeat_interval() -> float:
    """Seconds between heartbeat lines (``$BDGEN_HEARTBEAT_S``; default 10)."""
    try:
        value = float(os.environ.get("BDGEN_HEARTBEAT_S", DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


def on_terminal() -> bool:
    """Whether a progress bar can be drawn (stderr is a terminal)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Counts ``total`` items of a job; a bar on a terminal, else heartbeat lines.

    ``bar=False`` never draws a bar (the caller shows its own, e.g. the trainer's), but the
    heartbeat still runs when there is no terminal. ``enabled=False``: nothing at all.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "item", *,
                 bar: bool = True, enabled: bool = True, interval: float | None = None,
                 initial: int = 0):
        self.total, self.desc, self.unit = total, desc, unit
        self.done, self.current = initial, ""
        self.started = time.monotonic()
        self.interval = interval or heartbeat_interval()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar = None
        self._thread: threading.Thread | None = None
        if not enabled:
            return
        if on_terminal():
            if bar:
                from tqdm import tqdm

                self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit,
                                 leave=False, dynamic_ncols=True)
        else:
            self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{desc}",
                                            daemon=True)
            self._thread.start()

    # -- the job reports ----------------------------------------------------------------
    def status(self, text: str) -> None:
        """What is being worked on now (shown beside the bar / in the next line)."""
        with self._lock:
            self.current = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
        if self._bar is not None:
            self._bar.update(n)

    def update_to(self, done: int, text: str | None = None) -> None:
        """Set the count (e.g. the training step) and optionally the status."""
        with self._lock:
            delta, self.done = done - self.done, done
        if text is not None:
            self.status(text)
        if self._bar is not None and delta:
            self._bar.update(delta)

    # -- lines --------------------------------------------------------------------------
    def line(self) -> str:
        with self._lock:
            done, current = self.done, self.current
        of = f"/{self.total}" if self.total is not None else ""
        what = f" ({current})" if current else ""
        return (f"{self.desc}: {done}{of} {self.unit}(s){what}, "
                f"{time.monotonic() - self.started:.0f} s")

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            log.info("%s", self.line())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def iterate(items: Iterable[T], desc: str, unit: str = "item",
            label: Callable[[T], str] = str, enabled: bool = True) -> Iterator[T]:
    """The items, with a :class:`Progress` over them (the current one's ``label`` shown);
    closed when the loop ends, breaks or raises."""
    items = list(items)
    with Progress(len(items), desc, unit, enabled=enabled) as bar:
        for i, item in enumerate(items):
            bar.update_to(i, label(item))
            yield item
        bar.update_to(len(items))
