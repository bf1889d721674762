"""The `rebuild` strategy, shared by every kind whose change is "keep the rest" (dedupe, retention):
the kept rows are copied into a shadow table while a trigger logs concurrent writes, which are
replayed; a short lock swaps the tables (`dbsweep.dialects.pg_rebuild`), and the old one stays as
the backup of the removed rows: `restore` puts them back from it, and a later run drops it once
`keep_backup` has passed.

A kind brings its rule as a `RebuildWalker` subclass (how the shadow is filled, how a logged change
is replayed, which backup rows it removed) and a `Removed` for restore; the stages, the swap, the
backups and the undo are the engine's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

import sqlalchemy as sa

from ..archive import Change
from ..catalog import dated_copies, has_table, reflect_table
from ..dialects import Dialect
from ..errors import BadInput
from ..keys import after_key
from ..ledger import NOT_UNDOABLE_KEY
from ..names import derived
from ..plan import Step
from ..walkers import StagedWalker, Walker
from .census import Census, checked, is_count

REBUILD, DROP_BACKUP = "rebuild", "drop_backup"
STAMP = "%Y%m%d%H%M"
RESTORE_CHUNK = 50_000

# a step's rows of the backup that the rebuild removed, for restore: removed(step)(backup, table)
Removed = Callable[[Step], Callable[[sa.Table, sa.Table], sa.ColumnElement]]


def rebuild_names(conn: sa.Connection, table: sa.Table, now: datetime, word: str) -> dict:
    """The shadow, log, trigger and backup names (`<table>__<word>_new`, …); the backup stamped with
    the first minute from `now` whose name is free (a backup kept from an earlier run in the same
    minute has it)."""
    moment = now.replace(second=0, microsecond=0)
    while has_table(conn, derived(table.name, f"__{word}_{moment:{STAMP}}"), table.schema):
        moment += timedelta(minutes=1)
    return {"shadow": derived(table.name, f"__{word}_new"), "log": derived(table.name, f"__{word}_log"),
            "capture": derived(table.name, f"__{word}_capture"),
            "backup": derived(table.name, f"__{word}_{moment:{STAMP}}")}


def backups(conn: sa.Connection, table: sa.Table, word: str) -> list[tuple[str, datetime]]:
    """A table's rebuild backups, oldest first, with the moment each was made (from its name)."""
    return dated_copies(conn, table.schema, table.name, f"__{word}_", STAMP)


def rebuild_blockers(conn, dialect: Dialect, table: sa.Table) -> list[str] | None:
    """What a swap could not carry over to the new table (None: the dialect cannot rebuild)."""
    if dialect.name != "postgresql":
        return None
    from ..dialects import pg_rebuild

    return pg_rebuild.blockers(conn, table)


@dataclass
class KeptBackup:
    """A rebuild backup as a plan sees it: dropped by this plan (`step`), or kept until `due`."""

    name: str
    qualified: str
    made: datetime
    due: datetime
    rows: int
    step: Step | None

    @property
    def why(self) -> str:
        if self.step is not None:
            return f"made {self.made:%Y-%m-%d %H:%M} UTC; keep_backup has passed"
        return f"made {self.made:%Y-%m-%d %H:%M} UTC; dropped by a run after {self.due:%Y-%m-%d %H:%M} UTC"


def kept_backups(conn, table: sa.Table, word: str, keep: timedelta, now: datetime, spec: dict,
                 key: list[str]) -> list[KeptBackup]:
    """The table's backups; those past keep_backup get a step that drops them (shown in the plan,
    never silent)."""
    found = []
    for name, made in backups(conn, table, word):
        qualified = f"{table.schema}.{name}" if table.schema else name
        size = conn.execute(sa.select(sa.func.count()).select_from(reflect_table(conn, qualified))).scalar()
        step = None
        if now >= made + keep:
            step = Step(table=table.fullname, walk=DROP_BACKUP, key=key, rows_selected=0, batch_size=1,
                        spec={**spec, "backup": name})
        found.append(KeptBackup(name, qualified, made, made + keep, size, step))
    return found


class Recorded(Change):
    """A rebuild's only record: the swap's (or a dropped backup's), written by the walker itself."""

    def begin_batch(self, run_id: str, batch_no: int) -> None:
        self.run_id, self.batch_no, self.ref = run_id, batch_no, None


class RebuildWalker(StagedWalker):
    """The engine's stages; a kind's subclass fills the shadow (`_copy`, and any stage it adds),
    replays a logged change (`replay`), adds what the new table needs besides the old one's
    structure (`constraints`) and counts what the swap removed (`rows_removed`, which may read
    `rows_at_swap`: a kind that does sets `census`, and the old table is counted while it copies)."""

    stages = ("prepare", "copy", "settle", "build", "catchup", "swap", "count")
    carried = ("pairs", "kept", "census")  # cursor entries every later stage keeps
    census = False

    def __init__(self, ctx, table, step, sink, cursor):
        super().__init__(ctx, table, step, sink, cursor)
        from ..dialects import pg_rebuild

        self.sql = pg_rebuild
        self.names = pg_rebuild.RebuildNames(**step.spec["names"])
        with ctx.engine.connect() as conn:
            self.columns = pg_rebuild.copied_columns(conn, table)
            self.types = pg_rebuild.column_types(conn, table)
        kept = self.cursor.get("kept", 0)
        if not is_count(kept) or kept < 0:  # read back: never trusted
            raise BadInput(f"ledger cursor of '{step.table}' counts {str(kept)[:40]!r} rows kept, not a count")
        checked(self.cursor.get("census"), step.table)
        self.counting, self.counted = None, None  # the census running, and what it found

    # the rule's part ------------------------------------------------------------------------
    def logged(self) -> list[str]:
        """The columns the capture trigger logs of every row written during the rebuild."""
        return list(self.step.key)

    def _copy(self, conn, size, exact):
        raise NotImplementedError

    def replay(self, conn, limit: int | None) -> tuple[int, int]:
        """Replay up to `limit` logged changes (None: all): (changes consumed, net rows gained)."""
        raise NotImplementedError

    def constraints(self, conn) -> None:
        """What the new table gets besides the old table's structure (dedupe: its unique key)."""

    def rows_removed(self, conn, backup: sa.Table) -> int:
        """The rows of the backup the swap left behind on purpose."""
        raise NotImplementedError

    def skip_indexes(self) -> list[str]:
        return []

    # the engine's part ----------------------------------------------------------------------
    def can_stop_within(self, rows_left: int | None) -> bool:
        return rows_left is None or rows_left >= self.step.rows_selected  # the swap removes every row at once

    def next_stage(self, **extra) -> dict | None:
        carried = {k: self.cursor[k] for k in self.carried if k in self.cursor}
        return super().next_stage(**{**carried, **extra})

    def advance(self, cursor, rows, size):
        prepared = self.stage == "prepare" and cursor.get("stage") not in (None, "prepare")
        super().advance(cursor, rows, size)
        if prepared and self.census:  # the trigger is committed: every write the count misses is logged
            self.counting = Census(self.ctx, self.table)

    def close(self) -> None:
        if self.counting is not None:
            self.counting.cancel()

    def _census(self) -> dict | None:
        """The census the replays add to: the cursor's, or the one counted while this process copied."""
        if "census" in self.cursor:
            return self.cursor["census"]
        if self.counting is not None:
            self.counted, self.counting = self.counting.result(), None
        return self.counted

    def _take(self, conn, limit: int | None) -> tuple[int, dict]:
        """Replay up to `limit` logged changes: (changes consumed, the cursor entries they move)."""
        census = self._census()
        consumed, gained = self.replay(conn, limit)
        moved = {"kept": self.cursor.get("kept", 0) + gained}
        if census is not None:
            delta = self.sql.census_delta(conn, census["snapshot"]) if consumed else 0
            moved["census"] = {**census, "delta": census["delta"] + delta}
        return consumed, moved

    def rows_at_swap(self, conn, backup: sa.Table) -> int:
        """The rows the old table had at the swap: its census, or (none was taken) a count of the backup."""
        census = self.cursor.get("census")
        if census is not None:
            return census["rows"] + census["delta"]
        return conn.execute(sa.select(sa.func.count()).select_from(backup)).scalar()

    def _prepare(self, conn, size, exact):
        if not has_table(conn, self.names.shadow, self.table.schema):
            self.sql.create_shadow(conn, self.table, self.names, list(dict.fromkeys(self.logged())))
        return 0, self.next_stage(kept=0)

    def _settle(self, conn, size, exact):
        """Replay everything logged during the copy before the shadow gets its keys: a row a writer
        moved ahead of the walk was copied twice, and the replay of its key leaves it once."""
        return 0, self.next_stage(**self._take(conn, None)[1])

    def _build(self, conn, size, exact):
        """The shadow gets the old table's indexes and constraints, and what the rule adds."""
        pairs = self.sql.clone_structure(conn, self.table, self.names, self.skip_indexes())
        self.constraints(conn)
        return 0, self.next_stage(pairs=pairs)

    def _catchup(self, conn, size, exact):
        """Replay what writers did meanwhile, until what is left is small enough for the swap."""
        consumed, moved = self._take(conn, size)
        if consumed >= size:
            return 0, {**self.cursor, **moved}
        return 0, self.next_stage(**moved)

    def _swap(self, conn, size, exact):
        self.ctx.dialect.set_session_timeouts(conn, self.step.spec["lock_timeout_swap_s"],
                                              self.ctx.options.statement_timeout_s, local=True)
        moved = []
        self.sql.swap(conn, self.table, self.names, [tuple(p) for p in self.cursor["pairs"]],
                      lambda: moved.append(self._take(conn, None)[1]))
        return 0, self.next_stage(**moved[0])

    def _count(self, conn, size, exact):
        """The rows the swap left behind, recorded with where they are (the backup)."""
        backup = reflect_table(conn, f"{self.table.schema}.{self.names.backup}" if self.table.schema
                               else self.names.backup)
        gone = self.rows_removed(conn, backup)
        self.ctx.dialect.analyze(conn, sa.Table(self.table.name, sa.MetaData(), schema=self.table.schema))
        self.sink.ref = json.dumps({"rebuild": self.table.fullname, "backup": self.names.backup})
        return gone, self.next_stage()


class DropBackupWalker(Walker):
    """One batch: drop a rebuild's backup whose keep_backup has passed (not undoable, and recorded so)."""

    def __init__(self, table: sa.Table, step: Step, sink: Change):
        self.table, self.step, self.sink = table, step, sink

    def batch(self, conn, size, exact=False):
        drop_backup(conn, self.table, self.step.spec["backup"])
        self.sink.ref = json.dumps({"dropped_backup": self.step.spec["backup"], NOT_UNDOABLE_KEY: False})
        return 0, None

    def advance(self, cursor, rows, size):
        self.done = True


def drop_backup(conn, table: sa.Table, name: str) -> None:
    if has_table(conn, name, table.schema):
        conn.execute(sa.schema.DropTable(reflect_table(conn, f"{table.schema}.{name}" if table.schema else name)))


# undo ----------------------------------------------------------------------------------------
def put_back_from_backup(engine, ledger, run_id: str, batch_no: int, step: Step, backup_name: str,
                         removed) -> int:
    """Insert the backup's rows that the rebuild removed and whose key the table lacks, in chunks of
    the backup's key order, each its own transaction (a rerun skips what is back); the last marks
    the batch restored."""
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
            chunk = conn.execute(sa.select(*keys).where(*lower).order_by(*keys).offset(RESTORE_CHUNK - 1).limit(1)).first()
            upper = [] if chunk is None else [sa.not_(after_key(keys, list(chunk)))]
            names = [c.name for c in table.c if c.computed is None]
            source = sa.select(*(backup.c[n] for n in names)).where(*lower, *upper, removed(backup, table), ~sa.exists(
                sa.select(sa.literal(1)).select_from(table).where(*(table.c[k] == backup.c[k] for k in step.key))))
            # SQLAlchemy 2.1 keeps no rowcount for INSERT ... SELECT unless asked to
            restored += conn.execute(sa.insert(table).from_select(names, source),
                                     execution_options={"preserve_rowcount": True}).rowcount
            if chunk is None:
                ledger.mark_restored(conn, run_id, batch_no)
                return restored
            after = list(chunk)


def _records(ledger, run):
    """The run's rebuild records not yet restored: all, the backups it exported then dropped, the swaps."""
    batches = list(reversed(ledger.archived_batches(run.run_id)))
    records = [(b, json.loads(b.archive)) for b in batches if b.archive.startswith("{")]
    exported = {r["dropped_backup"] for _, r in records if r.get("exported")}
    return records, exported, [(b, r) for b, r in records if "rebuild" in r]


def check_backups(engine, ledger, run) -> None:
    """Refuse (before anything changes) a restore whose swap's backup is gone, unless the run
    exported its rows first."""
    _, exported, swaps = _records(ledger, run)
    with engine.connect() as conn:
        for _, record in swaps:
            table = reflect_table(conn, record["rebuild"])
            if record["backup"] not in exported and not has_table(conn, record["backup"], table.schema):
                raise BadInput(f"the backup {record['backup']} of {record['rebuild']} is gone (dropped after "
                               "keep_backup, or archive = 'none'): nothing to restore from")


@dataclass
class RebuildUndo:
    rows: int  # put back
    said: list[str]
    batches: int
    archived: int  # the rows the swaps put back recorded removing


def restore_rebuilds(engine, ledger, run, plan, removed: Removed) -> RebuildUndo:
    """Undo the rebuilds of a run: each swap's removed rows put back from its backup (or, when the
    run exported them and dropped the backup, left to the export's own batches); an unfinished
    rebuild's shadow, log and trigger dropped. Refused before anything changes when a backup the
    run needs is gone. Batches that are not a rebuild's are left to the caller."""
    from ..dialects import pg_rebuild

    records, exported, swaps = _records(ledger, run)
    check_backups(engine, ledger, run)
    steps = {s.table: s for s in plan.steps if s.walk == REBUILD}
    said, rows, archived = [], 0, 0
    swapped = {r["rebuild"] for _, r in swaps}
    for step in (s for s in steps.values() if s.table not in swapped):
        with engine.begin() as conn:
            dropped = pg_rebuild.discard(conn, reflect_table(conn, step.table),
                                         pg_rebuild.RebuildNames(**step.spec["names"]))
        if dropped:
            said.append(f"{step.table}: the rebuild had not swapped; dropped {', '.join(dropped)}")
    for batch, record in swaps:
        if record["backup"] in exported:  # its rows come back from the export's batches
            with engine.begin() as conn:
                ledger.mark_restored(conn, run.run_id, batch.batch_no)
            continue
        step = steps[record["rebuild"]]
        rows += put_back_from_backup(engine, ledger, run.run_id, batch.batch_no, step, record["backup"], removed(step))
        archived += batch.rows
    for batch, record in records:
        if "dropped_backup" in record and record.get("exported"):
            with engine.begin() as conn:
                ledger.mark_restored(conn, run.run_id, batch.batch_no)
    return RebuildUndo(rows, said, len(swaps), archived)
