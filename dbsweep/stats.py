"""`dbsweep stats`: what the ledger says of each phase's runs — how many, how many succeeded, rows
changed, the last success, median duration and rows/s (seed 004's statistics)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime

from .ledger import FINISHED, REFUSED, RESTORED, Ledger, RunRecord
from .plan import as_utc


@dataclass
class PhaseStats:
    policy: str
    phase: str
    runs: int  # runs that started (a refused run changed nothing and is counted apart)
    succeeded: int  # finished (restored ones too: they finished before they were undone)
    refused: int
    rows_changed: int  # by runs that were not undone since
    last_success: datetime | None
    median_seconds: float | None
    median_rows_per_s: float | None

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.runs if self.runs else None


def _seconds(run: RunRecord) -> float | None:
    if run.finished_at is None:
        return None
    return max((as_utc(run.finished_at) - as_utc(run.started_at)).total_seconds(), 1e-6)


def phase_stats(ledger: Ledger, policy: str, phases: list[str]) -> list[PhaseStats]:
    runs = ledger.list_runs(policy, limit=None)
    found = []
    for phase in phases:
        mine = [r for r in runs if r.phase == phase]
        started = [r for r in mine if r.state != REFUSED]
        done = [r for r in started if r.state in (FINISHED, RESTORED)]
        timed = [(r, _seconds(r)) for r in done if r.state == FINISHED and _seconds(r) is not None]
        found.append(PhaseStats(
            policy=policy, phase=phase, runs=len(started), succeeded=len(done), refused=len(mine) - len(started),
            rows_changed=sum(r.rows_done for r in started if r.state != RESTORED),
            last_success=max((as_utc(r.finished_at) for r, _ in timed), default=None),
            median_seconds=statistics.median(s for _, s in timed) if timed else None,
            median_rows_per_s=statistics.median(r.rows_done / s for r, s in timed) if timed else None,
        ))
    return found

