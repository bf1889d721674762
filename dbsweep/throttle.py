"""Batch sizing and the reasons a run stops early."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass

FINISHED = "finished"
RUNTIME_LIMIT = "runtime limit"
ROW_CAP = "row cap"
SIGNAL = "signal"


class BatchSizer:
    """Fixed size, or (with target_ms) sized from a decaying average of rows per second."""

    def __init__(self, size: int, target_ms: int | None = None, minimum: int = 100, maximum: int = 100_000):
        self.size = size
        self.target_ms = target_ms
        self.minimum, self.maximum = min(minimum, size), max(maximum, size)
        self.rate: float | None = None

    def observe(self, rows: int, seconds: float) -> None:
        if self.target_ms is None or rows <= 0 or seconds <= 0:
            return
        rate = rows / seconds
        self.rate = rate if self.rate is None else 0.7 * self.rate + 0.3 * rate
        wanted = self.rate * self.target_ms / 1000
        self.size = int(max(self.minimum, min(self.maximum, wanted, self.size * 2)))


@dataclass
class StopRules:
    max_rows: int | None = None
    max_runtime_s: float | None = None

    def __post_init__(self):
        self.started = time.monotonic()
        self.signalled: str | None = None

    def rows_left(self, rows_done_here: int) -> int | None:
        return None if self.max_rows is None else self.max_rows - rows_done_here

    def reason(self, rows_done_here: int) -> str | None:
        if self.signalled:
            return f"{SIGNAL} ({self.signalled})"
        if self.max_rows is not None and rows_done_here >= self.max_rows:
            return ROW_CAP
        if self.max_runtime_s is not None and time.monotonic() - self.started >= self.max_runtime_s:
            return RUNTIME_LIMIT
        return None


class StopOnSignals:
    """SIGINT/SIGTERM: finish the current batch, then stop. Only in the main thread."""

    def __init__(self, rules: StopRules):
        self.rules = rules
        self.previous = {}

    def _handler(self, signum, frame):
        self.rules.signalled = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
