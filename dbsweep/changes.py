"""What a batch does to the rows its walker picked, and the names an archive stamps them with:
the small part of archiving the dialects build on (archive.py holds the rest)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

RUN_ID, BATCH_NO, ARCHIVED_AT = "dbsweep_run_id", "dbsweep_batch_no", "dbsweep_archived_at"
# an archive row's one stamp: its batch in `<archive>_batches` (which holds the run, batch and time)
BATCH = "dbsweep_batch"


class Change:
    """What a batch does to the rows its walker picked. The walker (or the dialect, for the forms
    only one database has) builds the DELETE that names those rows; the change carries it out,
    asking the dialect for the SQL of its own operation, and says in `ref` what the batch's ledger
    row records of it (an archive, a file, a moved table)."""

    ref: str | None = None
    # it can be written as CTEs of one statement (delete_cte): a dialect may then fold the batch's
    # key search into that statement too
    one_statement: bool = False

    def begin_batch(self, run_id: str, batch_no: int) -> None:
        self.run_id = run_id

    def apply(self, conn: sa.Connection, stmt: sa.Delete, table: sa.Table) -> int:
        raise NotImplementedError

    def delete_cte(self, dialect, stmt: sa.Delete, table: sa.Table, suffix: str) -> tuple[list, Any]:
        """This change as common table expressions of one bigger statement (several tables deleted
        in one round trip): (the CTEs, the one whose rows count the change)."""
        raise TypeError(f"{type(self).__name__} cannot be written inside one statement")


class NoArchive(Change):
    one_statement = True

    def begin_batch(self, run_id: str, batch_no: int) -> None:
        self.run_id, self.ref = run_id, None

    def apply(self, conn: sa.Connection, stmt: sa.Delete, table: sa.Table) -> int:
        return conn.execute(stmt).rowcount

    def delete_cte(self, dialect, stmt: sa.Delete, table: sa.Table, suffix: str) -> tuple[list, Any]:
        gone = dialect.counted_delete_cte(stmt, suffix)
        return [gone], gone


@dataclass(frozen=True)
class ArchiveTables:
    rows: sa.Table     # the archived rows, each with its BATCH
    batches: sa.Table  # BATCH -> run, ledger batch, time

    def batch_rows(self, run_id: str, batch_no: int) -> sa.ColumnElement:
        """The archive rows one ledger batch saved."""
        b = self.batches.c
        return self.rows.c[BATCH] == (sa.select(b[BATCH]).where(b[RUN_ID] == run_id, b[BATCH_NO] == batch_no)
                                      .scalar_subquery())

    def runs_rows(self, run_ids: list[str]) -> sa.ColumnElement:
        """The archive rows the given runs saved."""
        b = self.batches.c
        return self.rows.c[BATCH].in_(sa.select(b[BATCH]).where(b[RUN_ID].in_(run_ids or [""])))
