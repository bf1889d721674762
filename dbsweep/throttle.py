"""Batch sizing and the reasons a run stops early."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable

FINISHED = "finished"
RUNTIME_LIMIT = "runtime limit"
ROW_CAP = "row cap"
SIGNAL = "signal"


def stopped_by_signal(reason: str | None) -> bool:
    """Whether a run stopped because the operator (Ctrl-C) or a service manager (SIGTERM) said so."""
    return bool(reason) and reason.startswith(SIGNAL)


class BatchSizer:
    """Fixed size, or (with target_ms) sized from the recent rows per second, growing at most GROWTH
    times per batch and kept within [minimum, maximum]. The rate is rows over seconds summed with a
    decay, not an average of per-batch rates: small ramp-up batches, whose commit weighs more than
    their rows, count for little once bigger ones are seen, and one slow batch pulls the size down
    at once. Each batch costs a commit (a WAL flush): few batches near the target are the aim."""

    GROWTH = 4
    MEMORY = 0.5  # the weight an observation keeps at each later batch

    def __init__(self, size: int, target_ms: int | None = None, minimum: int = 100, maximum: int = 250_000):
        self.size = size
        self.target_ms = target_ms
        self.minimum, self.maximum = min(minimum, size), max(maximum, size)
        self.rows_seen = 0.0
        self.seconds_seen = 0.0

    def observe(self, rows: int, seconds: float) -> None:
        if self.target_ms is None or rows <= 0 or seconds <= 0:
            return
        self.rows_seen = self.MEMORY * self.rows_seen + rows
        self.seconds_seen = self.MEMORY * self.seconds_seen + seconds
        wanted = self.rows_seen / self.seconds_seen * self.target_ms / 1000
        self.size = int(max(self.minimum, min(self.maximum, wanted, self.size * self.GROWTH)))


@dataclass
class StopRules:
    max_rows: int | None = None
    max_runtime_s: float | None = None
    clock: Callable[[], float] = time.monotonic  # what runtime limits and pauses are measured by (a test's own clock)
    sleep: Callable[[float], None] = time.sleep  # how a pause waits (a test's clock may move on instead)

    def __post_init__(self):
        self.started = self.clock()
        self.signalled: str | None = None

    def pause(self, seconds: float, slice_s: float = 0.1) -> None:
        """Sleep, but wake within `slice_s` of a signal: an operator's Ctrl-C is never kept waiting."""
        end = self.clock() + seconds
        while not self.signalled and (left := end - self.clock()) > 0:
            self.sleep(min(slice_s, left))

    def rows_left(self, rows_done_here: int) -> int | None:
        return None if self.max_rows is None else self.max_rows - rows_done_here

    def reason(self, rows_done_here: int) -> str | None:
        if self.signalled:
            return f"{SIGNAL} ({self.signalled})"
        if self.max_rows is not None and rows_done_here >= self.max_rows:
            return ROW_CAP
        if self.max_runtime_s is not None and self.clock() - self.started >= self.max_runtime_s:
            return RUNTIME_LIMIT
        return None


class ReplicaLagThrottle:
    """After a batch has committed, wait while a live signal is over its limit (the worst replica's
    lag in seconds, sessions waiting on locks, a policy's throttle query), checking every `poll_s`;
    a stop rule (signal, runtime limit) ends the wait."""

    def __init__(self, probe, limit_s: float, rules: StopRules, poll_s: float = 1.0, sleep=None):
        self.probe, self.limit_s, self.rules, self.poll_s = probe, limit_s, rules, poll_s
        self.sleep = sleep or rules.pause
        self.paused_s = 0.0
        self.pauses = 0

    def wait(self, rows_done_here: int) -> None:
        began = None  # the clock is read only when there is a wait to measure
        while True:
            lag = self.probe()
            if lag is None or lag <= self.limit_s or self.rules.reason(rows_done_here):
                break
            if began is None:
                began = self.rules.clock()
            self.sleep(self.poll_s)
        if began is not None:
            self.pauses += 1
            self.paused_s += self.rules.clock() - began


LoadThrottle = ReplicaLagThrottle  # the same wait, whatever the signal


class DutyCycle:
    """Keep the time spent in batches at most `duty` of the wall time since the run started: after
    a batch, pause for as long as that takes (gh-ost's and pt-archiver's idea of leaving the server
    room between chunks, stated as a share instead of a guessed sleep)."""

    def __init__(self, duty: float, rules: StopRules):
        self.duty, self.rules = duty, rules
        self.busy_s = 0.0
        self.paused_s = 0.0

    def after_batch(self, seconds: float) -> None:
        self.busy_s += seconds
        owed = self.busy_s / self.duty - (self.rules.clock() - self.rules.started)
        if owed > 0:
            began = self.rules.clock()
            self.rules.pause(owed)
            self.paused_s += self.rules.clock() - began


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
