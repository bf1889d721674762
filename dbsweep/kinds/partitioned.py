"""The partition fast path for retention: on a table range-partitioned on the time column,
partitions wholly older than the cutoff go whole (detach + drop, or detach + move to the archive
schema), O(1) each; the partition holding the cutoff (and a default partition) is walked in batches."""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa

from ..catalog import reflect_table
from ..dialects import Dialect
from ..names import derived
from ..plan import Step
from ..walkers import Walker
from .common import walk_step

ARCHIVE_SCHEMA = "dbsweep_archive"
PARTITION = "partition"  # the walk of a step that takes a whole partition


def partition_steps(conn: sa.Connection, dialect: Dialect, table: sa.Table, time_col: sa.Column, cutoff: datetime,
                    spec: dict, batch_size: int, selection, walk: str = "key") -> list[Step] | None:
    """Steps per partition, or None when the table is not range-partitioned on the time column.
    `selection(table, step)` rebuilds the retention predicate on a partition."""
    if not hasattr(dialect, "range_partitions"):
        return None
    partitions = dialect.range_partitions(conn, table, time_col.name)
    if partitions is None:
        return None
    steps = []
    for part in partitions:
        child = reflect_table(conn, part.qualified)
        whole = (not spec.get("where") and part.upper is not None
                 and dialect.compare_bound(conn, time_col, part.upper, cutoff) <= 0)
        if whole:
            rows = conn.execute(sa.select(sa.func.count()).select_from(child)).scalar()
            steps.append(Step(table=part.qualified, walk=PARTITION, rows_selected=rows, batch_size=batch_size,
                              spec={**spec, "parent": table.fullname, "bound": part.bound}))
            continue
        if part.lower is not None and dialect.compare_bound(conn, time_col, part.lower, cutoff) >= 0:
            continue  # wholly newer than the cutoff: nothing selected
        probe = Step(table=part.qualified, walk="key", rows_selected=0, batch_size=batch_size, spec=spec)
        chosen = selection(child, probe)
        rows = conn.execute(sa.select(sa.func.count()).select_from(child).where(chosen)).scalar()
        if rows:
            steps.append(walk_step(conn, dialect, child, chosen, rows, batch_size, spec, walk))
    return steps


class PartitionWalker(Walker):
    """A partition wholly older than the cutoff: one batch detaches it and drops it, or moves it
    to the archive schema (restore moves it back and attaches it again)."""

    def __init__(self, dialect, table: sa.Table, step: Step, sink, archive: bool):
        self.dialect, self.table, self.step, self.sink, self.archive = dialect, table, step, sink, archive
        self.done = False

    def batch(self, conn: sa.Connection, size: int, exact: bool = False) -> tuple[int, dict | None]:
        parent = reflect_table(conn, self.step.spec["parent"])
        archive_as = None
        if self.archive:
            archive_as = f"{ARCHIVE_SCHEMA}.{derived(self.table.name, '__' + self.sink.run_id)}"
            self.sink.ref = json.dumps({"partition": self.step.table, "archived_as": archive_as,
                                        "parent": self.step.spec["parent"], "bound": self.step.spec["bound"]})
        return self.dialect.drop_partition(conn, parent, self.table, archive_as), None

    def can_stop_within(self, rows_left: int | None) -> bool:
        return rows_left is None or rows_left >= self.step.rows_selected  # a partition goes whole

    def advance(self, cursor: dict, rows: int, size: int) -> None:
        self.done = True


def reattach_partitions(engine: sa.Engine, ledger, run) -> tuple[int, int]:
    """Undo the whole partitions a run moved to the archive schema: attach each again, one
    transaction each, marked restored with it. Returns (batches, rows)."""
    from ..dialects import dialect_for

    batches = rows = 0
    for batch in reversed(ledger.archived_batches(run.run_id)):
        if not batch.archive.startswith("{"):
            continue
        moved = json.loads(batch.archive)
        if "partition" not in moved:  # a rebuild's record (`dbsweep.kinds.rebuild`)
            continue
        with engine.begin() as conn:
            dialect_for(conn).reattach_partition(conn, reflect_table(conn, moved["archived_as"]), moved["partition"],
                                                 reflect_table(conn, moved["parent"]), moved["bound"])
            ledger.mark_restored(conn, run.run_id, batch.batch_no)
        batches, rows = batches + 1, rows + batch.rows
    return batches, rows
