"""What watches a run from outside the batch loop: progress bars, Dagster logs, metrics, alerts.
The executor calls every observer after each committed batch and once when the run ends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Progress:
    table: str
    rows_done: int
    rows_planned: int
    batches: int
    rows_per_s: float
    batch_ms: float


class RunObserver:
    def on_batch(self, progress: Progress) -> None:
        """After a batch has committed."""

    def on_finish(self, report) -> None:
        """Once, with the run's RunReport, when the run finished or stopped early."""

    def on_error(self, plan, error: BaseException, seconds: float) -> None:
        """Once, when the run ended with an error instead (after recording it in the ledger)."""


class ProgressCallback(RunObserver):
    """A plain function of Progress, called after each batch."""

    def __init__(self, callback: Callable[[Progress], None]):
        self.callback = callback

    def on_batch(self, progress: Progress) -> None:
        self.callback(progress)
