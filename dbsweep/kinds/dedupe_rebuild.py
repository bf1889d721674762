"""Dedupe's `rebuild` strategy (PostgreSQL, most rows duplicates): the kept rows are copied into a
shadow table while a trigger logs concurrent writes, which are replayed; a short lock swaps the
tables, and the old one stays as the backup (`dbsweep.dialects.pg_rebuild`), dropped by a later
run once `keep_backup` has passed."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import sqlalchemy as sa

from ..archive import Change
from ..catalog import dated_copies, has_table, reflect_table
from ..dialects import Dialect
from ..errors import BadInput
from ..keys import after_key, to_json
from ..ledger import NOT_UNDOABLE_KEY
from ..names import derived
from ..plan import Step
from ..walkers import Walker
from .dedupe_in_place import Staged
from .dedupe_rule import rule_order


BACKUP = "__dedupe_"
STAMP = "%Y%m%d%H%M"


def rebuild_names(conn: sa.Connection, table: sa.Table, now: datetime) -> dict:
    """The shadow, log, trigger and backup names; the backup stamped with the first minute from
    `now` whose name is free (a backup kept from an earlier run in the same minute has it)."""
    moment = now.replace(second=0, microsecond=0)
    while has_table(conn, derived(table.name, f"{BACKUP}{moment:{STAMP}}"), table.schema):
        moment += timedelta(minutes=1)
    return {"shadow": derived(table.name, "__dedupe_new"), "log": derived(table.name, "__dedupe_log"),
            "capture": derived(table.name, "__dedupe_capture"), "backup": derived(table.name, f"{BACKUP}{moment:{STAMP}}")}


def backups(conn: sa.Connection, table: sa.Table) -> list[tuple[str, datetime]]:
    """A table's rebuild backups, oldest first, with the moment each was made (from its name)."""
    return dated_copies(conn, table.schema, table.name, BACKUP, STAMP)


def rebuild_blockers(conn, dialect: Dialect, table: sa.Table) -> list[str] | None:
    if dialect.name != "postgresql":
        return None
    from ..dialects import pg_rebuild

    return pg_rebuild.blockers(conn, table)


class RebuildWalker(Staged):
    stages = ("prepare", "helper", "copy", "nulls", "build", "catchup", "swap", "count")
    outside = frozenset({"helper"})

    def __init__(self, ctx, table, step, sink, cursor):
        super().__init__(ctx, table, step, sink, cursor)
        from ..dialects import pg_rebuild

        self.sql = pg_rebuild
        self.names = pg_rebuild.RebuildNames(**step.spec["names"])
        with ctx.engine.connect() as conn:
            self.columns = pg_rebuild.copied_columns(conn, table)
            self.types = pg_rebuild.column_types(conn, table)

    def can_stop_within(self, rows_left: int | None) -> bool:
        return rows_left is None or rows_left >= self.step.rows_selected  # the swap takes every duplicate at once

    def _prepare(self, conn, size, exact):
        if not has_table(conn, self.names.shadow, self.table.schema):
            self.sql.create_shadow(conn, self.table, self.names, self.step.key, self.step.spec["natural_key"])
        return 0, self.next_stage()

    def _copy(self, conn, size, exact):
        spec = self.step.spec
        _, last = self.sql.copy_kept(conn, self.table, self.names.shadow, spec["natural_key"], rule_order(spec),
                                     self.columns, self.types, self.cursor.get("after"), size)
        return 0, self.next_stage() if last is None else {"stage": "copy", "after": to_json(last)}

    def _nulls(self, conn, size, exact):
        spec = self.step.spec
        if not any(self.table.c[c].nullable for c in spec["natural_key"]):
            return 0, self.next_stage()  # NOT NULL key columns: no row to look for
        self.sql.copy_null_keys(conn, self.table, self.names.shadow, spec["natural_key"], rule_order(spec),
                                self.columns, spec["nulls"] == "equal")
        return 0, self.next_stage()

    def _build(self, conn, size, exact):
        """The shadow gets the old table's indexes and constraints, and the new unique one."""
        spec = self.step.spec
        pairs = self.sql.clone_structure(conn, self.table, self.names, [spec["helper_index"]])
        shadow = sa.Table(self.names.shadow, sa.MetaData(), *(sa.Column(c) for c in spec["natural_key"]),
                          schema=self.table.schema)
        conn.execute(sa.schema.CreateIndex(
            self.ctx.dialect.unique_index(shadow, spec["constraint"], spec["natural_key"], spec["nulls"] == "equal")))
        self.ctx.dialect.constraint_using_index(conn, shadow, spec["constraint"], spec["natural_key"])
        return 0, self.next_stage(pairs=pairs)

    def _replay(self, conn, limit):
        spec = self.step.spec
        return self.sql.consume_log(conn, self.table, self.names, self.step.key, spec["natural_key"], rule_order(spec),
                                    self.columns, spec["nulls"] == "equal", limit)

    def _catchup(self, conn, size, exact):
        """Replay what writers did meanwhile, until what is left is small enough for the swap."""
        consumed = self._replay(conn, size)
        return 0, {**self.cursor} if consumed >= size else self.next_stage(pairs=self.cursor["pairs"])

    def _swap(self, conn, size, exact):
        self.ctx.dialect.set_session_timeouts(conn, self.step.spec["lock_timeout_swap_s"],
                                              self.ctx.options.statement_timeout_s, local=True)
        self.sql.swap(conn, self.table, self.names, [tuple(p) for p in self.cursor["pairs"]],
                      lambda: self._replay(conn, None))
        return 0, self.next_stage()

    def _count(self, conn, size, exact):
        """The rows the swap left behind: the backup's rows whose key the new table does not hold."""
        backup = sa.Table(self.names.backup, sa.MetaData(), *(sa.Column(k) for k in self.step.key),
                          schema=self.table.schema)
        now = sa.Table(self.table.name, sa.MetaData(), *(sa.Column(k) for k in self.step.key), schema=self.table.schema)
        gone = conn.execute(sa.select(sa.func.count()).select_from(backup).where(~sa.exists(
            sa.select(sa.literal(1)).select_from(now).where(*(now.c[k] == backup.c[k] for k in self.step.key)))
        )).scalar()
        self.ctx.dialect.analyze(conn, now)
        helper = self.step.spec.get("helper_index")
        if helper:  # dbsweep's helper went with the old table: its name is free again for a later plan
            self.sql.drop_index_here(conn, self.table.schema, helper)
        self.sink.ref = json.dumps({"rebuild": self.table.fullname, "backup": self.names.backup})
        return gone, None


class DropBackupWalker(Walker):
    """One batch: drop a rebuild's backup whose keep_backup has passed (not undoable, and recorded so)."""

    def __init__(self, table: sa.Table, step: Step, sink: Change):
        self.table, self.step, self.sink = table, step, sink

    def batch(self, conn, size, exact=False):
        name = self.step.spec["backup"]
        if has_table(conn, name, self.table.schema):
            backup = reflect_table(conn, f"{self.table.schema}.{name}" if self.table.schema else name)
            conn.execute(sa.schema.DropTable(backup))
        self.sink.ref = json.dumps({"dropped_backup": name, NOT_UNDOABLE_KEY: False})
        return 0, None

    def advance(self, cursor, rows, size):
        self.done = True


class Recorded(Change):
    """A rebuild's only record: the swap's, written by the walker itself."""

    def begin_batch(self, run_id: str, batch_no: int) -> None:
        self.run_id, self.ref = run_id, None


RESTORE_CHUNK = 50_000


def put_back_from_backup(engine, ledger, run_id: str, batch_no: int, step: Step, backup_name: str) -> int:
    """Insert the backup's rows whose key the table lacks, in chunks of the backup's key order,
    each its own transaction (a rerun skips what is back); the last marks the batch restored."""
    restored, after = 0, None
    while True:
        with engine.begin() as conn:
            table = reflect_table(conn, step.table)
            if not has_table(conn, backup_name, table.schema):
                raise BadInput(f"the backup {backup_name} of {step.table} is gone (dropped after keep_backup): "
                               "nothing to restore from")
            backup = reflect_table(conn, f"{table.schema}.{backup_name}" if table.schema else backup_name)
            keys = [backup.c[k] for k in step.key]
            lower = [] if after is None else [after_key(keys, after)]
            chunk = conn.execute(sa.select(*keys).where(*lower).order_by(*keys).limit(RESTORE_CHUNK)).all()
            if not chunk:
                ledger.mark_restored(conn, run_id, batch_no)
                return restored
            upper = list(chunk[-1])
            names = [c.name for c in table.c if c.computed is None]
            source = sa.select(*(backup.c[n] for n in names)).where(
                *lower, sa.not_(after_key(keys, upper)),
                ~sa.exists(sa.select(sa.literal(1)).select_from(table).where(*(table.c[k] == backup.c[k] for k in step.key))))
            # counted from RETURNING: psycopg reports no rowcount for INSERT ... SELECT
            restored += len(conn.execute(sa.insert(table).from_select(names, source).returning(sa.literal(1))).all())
            after = upper


