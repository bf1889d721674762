"""Progress of a long apply in Dagster's run log, as an observer of the run's batches."""

from __future__ import annotations

import time

import dagster as dg

from dbsweep.durations import parse_duration
from dbsweep.observers import Progress

PROGRESS_EVERY_BATCHES = 1000
PROGRESS_EVERY_SECONDS = 10.0


def progress_logger(context: dg.AssetExecutionContext, every: int | str | None):
    """A log line every `every` batches (int), every `every` (a duration), or by default every
    PROGRESS_EVERY_BATCHES batches or PROGRESS_EVERY_SECONDS, whichever comes first."""
    last = {"at": time.monotonic(), "batches": 0}
    batches = every if isinstance(every, int) else (None if every else PROGRESS_EVERY_BATCHES)
    seconds = parse_duration(every).total_seconds() if isinstance(every, str) else (None if every else PROGRESS_EVERY_SECONDS)

    def log(progress: Progress) -> None:
        now = time.monotonic()
        if ((batches is not None and progress.batches - last["batches"] >= batches)
                or (seconds is not None and now - last["at"] >= seconds)):
            context.log.info(f"{progress.table}: {progress.rows_done:,}/{progress.rows_planned:,} rows, "
                             f"{progress.rows_per_s:,.0f} rows/s, batch {progress.batch_ms:.0f} ms")
            last.update(at=now, batches=progress.batches)

    return log
