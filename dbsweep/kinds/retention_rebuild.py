"""Retention's `rebuild` strategy (PostgreSQL, most of the table due), on the shared rebuild engine
(`dbsweep.kinds.rebuild`): the rows the rule keeps are copied into the shadow key range by key range
(in key order: the new table comes out clustered on its key), a logged change is replayed by its
primary key, and after the swap the old table is the archive of the removed rows:
- archive = "table": it stays as the backup until `keep_backup` has passed (restore reads it);
- archive = "parquet": the removed rows are written from it to Parquet, batch by batch, and it is
  dropped once they are all on disk (restore reads the files);
- archive = "none": it is dropped at once (no undo, as the plan says)."""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa

from ..archive import make_archive
from ..catalog import reflect_table
from ..keys import after_key, from_json, to_json
from ..ledger import NOT_UNDOABLE_KEY
from ..walkers import table_walker
from . import rebuild
from .common import key_columns

WORD = "retention"  # its objects are <table>__retention_new, __retention_log, __retention_<stamp>, ...


def rebuild_names(conn: sa.Connection, table: sa.Table, now: datetime) -> dict:
    return rebuild.rebuild_names(conn, table, now, WORD)


def kept(selection: sa.ColumnElement) -> sa.ColumnElement:
    """The rows a rebuild copies: every row the rule does not select, a NULL verdict (a NULL time)
    included, as a DELETE of the selection would leave it."""
    return selection.is_not(sa.true())


class RetentionRebuildWalker(rebuild.RebuildWalker):
    stages = ("prepare", "copy", "build", "catchup", "swap", "count", "export", "drop")

    def __init__(self, ctx, table, step, sink, cursor, selection):
        super().__init__(ctx, table, step, sink, cursor)
        self.selection = selection  # the kind's selection(table, step), for any table shaped like this one
        self.keep = kept(selection(table, step))
        self.mode = step.spec["archive"]
        self.keys = key_columns(table, step)
        self.recorded, self.inner, self.scanned = sink, None, 0

    @property
    def sink(self):
        """The swap's record, or (while exporting) the Parquet archive of the backup's removed rows."""
        return self.inner.sink if self.inner is not None and self.stage == "export" else self.recorded

    @sink.setter
    def sink(self, value):
        self.recorded = value

    def units(self, rows: int) -> int:
        return self.scanned or rows  # the copy is sized by the keys it walks, the export by its rows

    def batch(self, conn, size, exact=False):
        self.scanned = 0
        return super().batch(conn, size, exact)

    def _copy(self, conn, size, exact):
        """The kept rows of the next `size` keys (key order), each batch its own short transaction:
        it reads the table, so no writer waits on it."""
        after = self.cursor.get("after")
        lower = [] if after is None else [after_key(self.keys, from_json(self.keys, after))]
        boundary = conn.execute(sa.select(*self.keys).where(*lower).order_by(*self.keys)
                                .offset(size - 1).limit(1)).first()
        upper = [] if boundary is None else [sa.not_(after_key(self.keys, list(boundary)))]
        copied = self.sql.copy_range(conn, self.table, self.names.shadow, self.columns, self.keep,
                                     sa.and_(sa.true(), *lower, *upper))
        self.scanned = size
        total = self.cursor.get("kept", 0) + copied
        if boundary is None:  # rows written since the trigger began are in its log, replayed later
            return 0, self.next_stage(kept=total)
        return 0, {**self.cursor, "after": to_json(boundary), "kept": total}

    def replay(self, conn, limit):
        return self.sql.replay_by_key(conn, self.table, self.names, self.step.key, self.columns, self.keep, limit)

    def rows_removed(self, conn, backup: sa.Table) -> int:
        """The backup's rows less the rows the new table had at the swap (counted by the copy and
        every replay, in the transactions that wrote them): no scan of the new table, whatever
        writers have done to it since."""
        return conn.execute(sa.select(sa.func.count()).select_from(backup)).scalar() - self.cursor.get("kept", 0)

    def _count(self, conn, size, exact):
        """With archive = "parquet" the removed rows are counted as the export writes them."""
        gone, cursor = super()._count(conn, size, exact)
        return (0 if self.mode == "parquet" else gone), cursor

    def _backup(self, conn) -> sa.Table:
        return reflect_table(conn, f"{self.table.schema}.{self.names.backup}" if self.table.schema else self.names.backup)

    def _export(self, conn, size, exact):
        """archive = "parquet": the removed rows leave the backup into Parquet files, batch by batch
        (key order), each file on disk before its batch commits."""
        if self.mode != "parquet":
            return 0, self.next_stage()
        backup = self._backup(conn)
        keys = [backup.c[k] for k in self.step.key]
        if "upto" not in self.cursor:
            first = conn.execute(sa.select(*keys).order_by(*keys).limit(1)).first()
            if first is None:
                return 0, self.next_stage()
            last = conn.execute(sa.select(*keys).order_by(*(k.desc() for k in keys)).limit(1)).first()
            self.cursor = {**self.cursor, "from": to_json(first), "upto": to_json(last), "after": None}
        if self.inner is None:
            walk = self.step.model_copy(update={"table": backup.fullname, "walk": "key",
                                                "first_key": self.cursor["from"], "last_key": self.cursor["upto"]})
            archive = make_archive("parquet", self.ctx.engine, self.ctx.dialect, backup, self.ctx.archive_dir)
            archive.begin_batch(self.recorded.run_id, self.recorded.batch_no)
            self.inner = table_walker(self.ctx, backup, walk, self.selection(backup, self.step), archive,
                                      {"after": self.cursor.get("after")})
        rows, cursor = self.inner.batch(conn, size, exact)
        if cursor is None:
            return rows, self.next_stage()
        return rows, {**self.cursor, "stage": "export", **cursor}

    def advance(self, cursor, rows, size):
        if self.inner is not None and cursor.get("stage") == "export":
            self.inner.advance(cursor, rows, size)
        elif self.inner is not None:
            self.inner = None
        super().advance(cursor, rows, size)

    def _drop(self, conn, size, exact):
        """archive = "none": the old table goes at once; "parquet": once its removed rows are on disk;
        "table": it stays as the backup until keep_backup has passed."""
        if self.mode == "table":
            return 0, None
        rebuild.drop_backup(conn, self.table, self.names.backup)
        record = {"dropped_backup": self.names.backup}
        record |= {"exported": True} if self.mode == "parquet" else {NOT_UNDOABLE_KEY: False}
        self.recorded.ref = json.dumps(record)
        return 0, None
