"""The CLI's progress bar: rows, rows/s, ETA."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .observers import Progress as RunProgress
from .plan import PhasePlan


@contextmanager
def progress_bar(console: Console, plan: PhasePlan):
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("rows  {task.fields[rate]:>10} rows/s  batch {task.fields[batch]:>6}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=False, disable=not console.is_terminal,
    )
    with bar:
        task = bar.add_task(plan.phase, total=max(plan.rows_selected, 1), rate="-", batch="-")

        def update(progress: RunProgress) -> None:
            bar.update(task, completed=progress.rows_done, rate=f"{progress.rows_per_s:,.0f}",
                       batch=f"{progress.batch_ms:.0f}ms")

        yield update
