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
from ..keys import from_json, to_json
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


TIME, KEY = "time", "key"  # how the copy walks: the time column's index from the cutoff on, or the key


CORRELATED = 0.8  # pg_stats correlation from which the time index reads the heap about in order


def copy_walk(indexes: list[dict], spec: dict, correlation: float | None) -> str:
    """The time index when one leads with the time column, the rule is the cutoff alone (the kept
    rows are then exactly those from the cutoff on and those without a time: the copy reads only
    them) and the rows lie about in time order (else each index entry is a random page read: 16M
    rows at half due took 25 times as long as along the key); else the key, reading the whole table."""
    plain = spec.get("where") is None and not spec.get("window") and not spec.get("keep") and not spec.get("guard")
    indexed = any(ix["columns"][:1] == [spec["time_column"]] and not ix["partial"] for ix in indexes)
    in_order = correlation is not None and abs(correlation) >= CORRELATED
    return TIME if plain and indexed and in_order else KEY


class RetentionRebuildWalker(rebuild.RebuildWalker):
    stages = ("prepare", "copy", "nulls", "settle", "build", "catchup", "swap", "count", "export", "drop")
    census = True

    def __init__(self, ctx, table, step, sink, cursor, selection, cutoff):
        super().__init__(ctx, table, step, sink, cursor)
        self.selection = selection  # the kind's selection(table, step), for any table shaped like this one
        self.cutoff = cutoff  # the cutoff as the time column compares it
        self.keep = kept(selection(table, step))
        self.mode = step.spec["archive"]
        self.keys = key_columns(table, step)
        self.recorded, self.inner, self.copied = sink, None, 0

    @property
    def sink(self):
        """The swap's record, or (while exporting) the Parquet archive of the backup's removed rows."""
        return self.inner.sink if self.inner is not None and self.stage == "export" else self.recorded

    @sink.setter
    def sink(self, value):
        self.recorded = value

    def units(self, rows: int) -> int:
        return self.copied or rows  # the copy is sized by the rows it copies (it removes none)

    def batch(self, conn, size, exact=False):
        self.copied = 0
        return super().batch(conn, size, exact)

    def _copy(self, conn, size, exact):
        """The next `size` kept rows, each batch its own short transaction that only reads the
        table (no writer waits on it): time windows along the time index from the cutoff, or the
        key order."""
        if self.step.spec.get("copy_walk") == TIME:
            return self._copy_window(conn, size)
        order, where = list(self.keys), [self.keep]
        after = self.cursor.get("after")
        if after is not None:
            values = from_json(order, after)
            where.append(sa.tuple_(*order) > sa.tuple_(*(sa.literal(v, c.type) for v, c in zip(values, order))))
        copied, last = self.sql.copy_next(conn, self.table, self.names.shadow, self.columns, where, order, size)
        return self._copied(copied, None if last is None or copied < size else to_json(last))

    def _copy_window(self, conn, size):
        when = self.table.c[self.step.spec["time_column"]]
        after = self.cursor.get("after")
        start = when >= self.cutoff if after is None else when > sa.literal(from_json([when], after)[0], when.type)
        copied, last = self.sql.copy_window(conn, self.table, self.names.shadow, self.columns, when, start, size)
        return self._copied(copied, None if last is None else to_json([last]))

    def _copied(self, copied, after):
        """Rows written since the trigger began are in its log, replayed later."""
        self.copied = copied
        total = self.cursor.get("kept", 0) + copied
        if after is None:
            return 0, self.next_stage(kept=total)
        return 0, {**self.cursor, "after": after, "kept": total}

    def _nulls(self, conn, size, exact):
        """After a walk of the time index: the rows without a time, which the rule keeps."""
        if self.step.spec.get("copy_walk") != TIME:
            return 0, self.next_stage()
        when = self.table.c[self.step.spec["time_column"]]
        copied = self.sql.copy_range(conn, self.table, self.names.shadow, self.columns, when.is_(None), sa.true())
        return 0, self.next_stage(kept=self.cursor.get("kept", 0) + copied)

    def replay(self, conn, limit):
        return self.sql.replay_by_key(conn, self.table, self.names, self.step.key, self.columns, self.keep, limit)

    def rows_removed(self, conn, backup: sa.Table) -> int:
        """The old table's rows at the swap less the new table's (both counted while the copy ran
        and by every replay, in the transactions that wrote them): a scan of neither table, whatever
        writers have done since."""
        return self.rows_at_swap(conn, backup) - self.cursor.get("kept", 0)

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
