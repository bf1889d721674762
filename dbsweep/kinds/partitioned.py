"""The partition fast path for retention: on a table range-partitioned on the time column,
partitions wholly older than the cutoff go whole (detach + drop, or detach + move to the archive
schema), O(1) each; the partition holding the cutoff (and a default partition) is walked in batches."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from ..catalog import reflect_table
from ..dialects import Dialect
from ..plan import Step
from .common import walk_step

ARCHIVE_SCHEMA = "dbsweep_archive"


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
            steps.append(Step(table=part.qualified, walk="partition", rows_selected=rows, batch_size=batch_size,
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
