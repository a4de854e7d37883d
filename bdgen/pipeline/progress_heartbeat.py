"""A progress line at least every N seconds when nobody sees a progress bar.

Under ``dvc repro``, a CI log or ``nohup``, stderr is not a terminal: tqdm's bar is
either off or a stream of carriage returns, and a long training run looks dead for
minutes. :class:`Heartbeat` prints one plain line (``train: step 1200/5000 (24%), loss
2.3104, 41.2 step/s, eta 1m32s``) from a daemon thread every ``every_s`` seconds with
the latest state given to :meth:`update`. On a terminal it stays silent (the bar shows it).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

#: Seconds between two progress lines without a TTY.
EVERY_S = 10.0


def _duration(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else (
        f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


class ProgressHeartbeat:
    """Prints ``label: step k/total (...)`` every ``every_s`` seconds while running."""

    def __init__(self, label: str, total: int, *, every_s: float = EVERY_S,
                 stream: IO[str] | None = None, enabled: bool | None = None) -> None:
        self.label, self.total, self.every_s = label, total, every_s
        self._stream = stream if stream is not None else sys.stderr
        isatty = getattr(self._stream, "isatty", lambda: False)()
        self.enabled = (not isatty) if enabled is None else enabled
        self._step: int | None = None
        self._first: tuple[float, int] | None = None
        self._fields: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def update(self, step: int, **fields: Any) -> None:
        """The latest step and any fields to show (``loss=2.31``, ``val_loss=...``)."""
        with self._lock:
            if self._first is None:
                self._first = (time.monotonic(), step)
            self._step = step
            self._fields.update(fields)

    def line(self) -> str | None:
        with self._lock:
            if self._step is None or self._first is None:
                return None
            step, (t0, s0), fields = self._step, self._first, dict(self._fields)
        parts = [f"{self.label}: step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%)"]
        parts += [f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                  for k, v in fields.items()]
        dt = time.monotonic() - t0
        if dt > 0 and step > s0:
            rate = (step - s0) / dt
            parts += [f"{rate:.1f} step/s", f"eta {_duration((self.total - step) / rate)}"]
        return ", ".join(parts)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            text = self.line()
            if text:
                print(text, file=self._stream, flush=True)

    def __enter__(self) -> ProgressHeartbeat:
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, name="bdgen-heartbeat",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            text = self.line()
            if text:
                print(text, file=self._stream, flush=True)
