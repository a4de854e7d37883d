"""Progress of long jobs: a bar on a terminal, a progress line when there is none.

Under ``dvc repro``, ``nohup`` or in a CI log there is no terminal, and a job silent for
minutes looks hung. :class:`Progress` shows a tqdm bar (with the item being worked on) when
stderr is a terminal; otherwise a background thread logs one line at least every
``interval`` seconds (``$BDGEN_HEARTBEAT_S``, default 10) with the latest state, whether or
not the job itself reported anything since. Lines go to the ``bdgen.progress`` logger (the
CLI shows them on stderr: stdout may be a JSON document), or to ``stream`` when one is
given. Any job can use it::

    with Progress(total=len(runs), desc="evaluate", unit="run") as p:
        for run in runs:
            p.status(run.name)              # evaluate: 3/10 run(s) (m/llada/42), 61 s
            ...
            p.advance()

Training counts optimiser steps with :class:`StepProgress`, whose line has the losses, the
rate and the ETA, and which says its last line when the job ends::

    with StepProgress("train", total=5000) as p:   # no bar of its own: the trainer's
        p.update(step, loss=2.3104)
        # train: step 1200/5000 (24%), loss 2.3104, 41.2 step/s, eta 1m32s

(Keeping a *claim* alive while a job works is :mod:`bdgen.pipeline.heartbeat`, not this.)
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import IO, Any, TypeVar

log = logging.getLogger("bdgen.progress")
T = TypeVar("T")
DEFAULT_INTERVAL_S = 10.0


def heartbeat_interval() -> float:
    """Seconds between progress lines without a terminal (``$BDGEN_HEARTBEAT_S``; default
    10)."""
    try:
        value = float(os.environ.get("BDGEN_HEARTBEAT_S", DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


def on_terminal(stream: IO[str] | None = None) -> bool:
    """Whether a progress bar can be drawn (``stream``, default stderr, is a terminal)."""
    try:
        return (stream if stream is not None else sys.stderr).isatty()
    except (AttributeError, ValueError):
        return False


def _duration(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else (
        f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


class Progress:
    """Counts ``total`` items of a job; a bar on a terminal, else progress lines.

    ``bar=False`` never draws a bar (the caller shows its own, e.g. the trainer's), but the
    lines still come when there is no terminal. ``enabled=False``: nothing at all.
    ``stream``: print the lines there (its own ``isatty`` decides) instead of logging them.
    """

    #: Say the last line when the job ends (when lines were being shown).
    final_line = False

    def __init__(self, total: int | None, desc: str, unit: str = "item", *,
                 bar: bool = True, enabled: bool = True, interval: float | None = None,
                 initial: int = 0, stream: IO[str] | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.done, self.current = initial, ""
        self.started = time.monotonic()
        self.interval = interval or heartbeat_interval()
        self._stream = stream
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar = None
        self._thread: threading.Thread | None = None
        terminal = on_terminal(stream)
        #: Whether progress lines are shown (enabled, and no terminal to draw a bar on).
        self.lines = enabled and not terminal
        if enabled and terminal and bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit,
                             leave=False, dynamic_ncols=True)
        if self.lines:
            self._thread = threading.Thread(target=self._beat, name=f"progress-{desc}",
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
    def line(self) -> str | None:
        """The progress line now (None: nothing to say yet)."""
        with self._lock:
            done, current = self.done, self.current
        of = f"/{self.total}" if self.total is not None else ""
        what = f" ({current})" if current else ""
        return (f"{self.desc}: {done}{of} {self.unit}(s){what}, "
                f"{time.monotonic() - self.started:.0f} s")

    def _say(self) -> None:
        text = self.line()
        if not text:
            return
        if self._stream is not None:
            print(text, file=self._stream, flush=True)
        else:
            log.info("%s", text)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self._say()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self.final_line:
                self._say()
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class StepProgress(Progress):
    """:class:`Progress` of a training job, counted in steps:
    ``train: step k/total (p%), <fields>, <rate> step/s, eta <left>``.

    :meth:`update` gives the latest step and the fields to show (``loss=2.31``: floats with
    4 decimals, anything else as it is). Silent until the first update; the rate and ETA
    are measured from it (a resumed run counts from where it resumed). Says its last line
    when the job ends."""

    final_line = True

    def __init__(self, desc: str, total: int, *, bar: bool = False, enabled: bool = True,
                 interval: float | None = None, stream: IO[str] | None = None):
        self._first: tuple[float, int] | None = None   # before the thread can read them
        self._fields: dict[str, Any] = {}
        super().__init__(total, desc, "step", bar=bar, enabled=enabled, interval=interval,
                         stream=stream)

    def update(self, step: int, **fields: Any) -> None:
        """The latest step and any fields to show (``loss=2.31``, ``val_loss=...``)."""
        with self._lock:
            if self._first is None:
                self._first = (time.monotonic(), step)
            self._fields.update(fields)
        self.update_to(step)

    def line(self) -> str | None:
        with self._lock:
            if self._first is None:
                return None
            step, (t0, s0), fields = self.done, self._first, dict(self._fields)
        total = self.total or 0
        parts = [f"{self.desc}: step {step}/{total} ({100 * step / max(total, 1):.0f}%)"]
        parts += [f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                  for k, v in fields.items()]
        dt = time.monotonic() - t0
        if dt > 0 and step > s0:
            rate = (step - s0) / dt
            parts += [f"{rate:.1f} step/s", f"eta {_duration((total - step) / rate)}"]
        return ", ".join(parts)

    def __enter__(self) -> StepProgress:
        return self


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
