"""Putting back what a run archived: every archived row whose key is not taken again, one
transaction per archived batch, marked restored in the same transaction, so a restore killed half
way and run again finishes the job without putting a row back twice. Below the kinds: each kind's
`restore` builds on these; `dbsweep.restore` runs a kind's restore for a run of the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from .archive import ArchiveTables, open_archive, read_parquet, read_parquet_as_text
from .catalog import reflect_table
from .dialects import dialect_for
from .errors import BadInput
from .ledger import Ledger
from .plan import PhasePlan

KEY_CHUNK = 1000


@dataclass
class RestoreReport:
    run_id: str
    phase: str
    batches: int
    rows_archived: int
    rows_restored: int
    rows_skipped: int  # their key exists again: left as they are
    already_restored: bool = False
    detail: str = ""


def restore_archived(engine: sa.Engine, ledger: Ledger, run, plan: PhasePlan, archive_dir: Path) -> RestoreReport:
    """Put archived rows back, newest batch first, one transaction per batch."""
    batches = ledger.archived_batches(run.run_id)
    if not batches and run.rows_done and not _any_archived(ledger, run.run_id):
        raise BadInput(f"run {run.run_id} recorded no archive (archive = 'none'): there is nothing to restore from")
    steps = {step.table: step for step in plan.steps}
    tables: dict[str, sa.Table] = {}
    archives: dict[str, ArchiveTables] = {}
    archived = restored = 0
    # newest batch first: in a cascade, parents (deleted last) come back before their children
    for batch in reversed(batches):
        if batch.archive.startswith("{"):
            continue  # a record, not an archive: the kind's own restore undoes it (a partition, a rebuild)
        with engine.begin() as conn:
            if batch.table_name not in tables:
                tables[batch.table_name] = reflect_table(conn, batch.table_name)
            table = tables[batch.table_name]
            keys = [table.c[k] for k in steps[batch.table_name].key if k in table.c]
            if batch.archive.endswith(".parquet"):
                restored += _insert_parquet(conn, table, keys, archive_dir / batch.archive)
            else:
                if batch.archive not in archives:
                    archives[batch.archive] = open_archive(conn, batch.archive)
                restored += insert_from_archive(conn, table, keys, archives[batch.archive], run.run_id, batch.batch_no)
            ledger.mark_restored(conn, run.run_id, batch.batch_no)
        archived += batch.rows
    return rows_put_back(run.run_id, plan.phase, len(batches), archived, restored)


def rows_put_back(run_id: str, phase: str, batches: int, archived: int, restored: int, where: str = "") -> RestoreReport:
    """The report of a restore that inserted archived rows; those not restored had their key taken."""
    skipped = archived - restored
    detail = f"restored {restored:,} of {archived:,} archived rows{where}" + (
        f"; {skipped:,} skipped (their key exists again)" if skipped else "")
    return RestoreReport(run_id, phase, batches, archived, restored, skipped, detail=detail)


def _any_archived(ledger: Ledger, run_id: str) -> bool:
    b = ledger.batches.c
    with ledger.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(b.run_id == run_id, b.archive.is_not(None))).scalar() > 0


def _archived_rows(table: sa.Table, keys: list[sa.Column], archive: ArchiveTables, run_id: str,
                   batch_no: int) -> tuple[list[str], sa.Select]:
    """The columns to put back (generated ones compute themselves again) and the SELECT of a
    batch's archived rows whose key is not taken again."""
    names = [c.name for c in table.c if c.computed is None]
    rows = archive.rows
    source = sa.select(*[rows.c[n] for n in names]).where(archive.batch_rows(run_id, batch_no))
    if keys:
        taken = sa.select(sa.literal(1)).select_from(table).where(*[table.c[k.name] == rows.c[k.name] for k in keys])
        source = source.where(~sa.exists(taken))
    return names, source


def _insert_from_archive_statement(table: sa.Table, keys: list[sa.Column], archive: ArchiveTables, run_id: str,
                                   batch_no: int) -> sa.Insert:
    """INSERT INTO t (...) SELECT ... FROM archive WHERE run/batch AND NOT EXISTS (same key in t)."""
    names, source = _archived_rows(table, keys, archive, run_id, batch_no)
    return sa.insert(table).from_select(names, source)


def insert_from_archive(conn, table: sa.Table, keys: list[sa.Column], archive: ArchiveTables, run_id: str,
                         batch_no: int) -> int:
    dialect = dialect_for(conn)
    if dialect.refuses_explicit_identity(table):
        names, source = _archived_rows(table, keys, archive, run_id, batch_no)
        return dialect.insert_select_overriding_identity(conn, table, names, source)
    # counted from RETURNING: psycopg reports no rowcount for INSERT ... SELECT under SQLAlchemy 2.1
    inserted = _insert_from_archive_statement(table, keys, archive, run_id, batch_no).returning(sa.literal_column("1"))
    return len(conn.execute(inserted).all())


def _insert_parquet(conn, table: sa.Table, keys: list[sa.Column], path: Path) -> int:
    """PostgreSQL takes the archived values back as text through each type's input function (exact
    for every type, 'infinity' included); elsewhere they go back as Python values."""
    dialect = dialect_for(conn)
    columns = read_parquet_as_text(path)
    if columns is not None and (restored := dialect.insert_text_rows(conn, table, columns)) is not None:
        return restored
    return _insert_missing(conn, table, keys, dialect.insertable_rows(table, read_parquet(path, table)))


def _insert_missing(conn, table: sa.Table, keys: list[sa.Column], rows: list[dict]) -> int:
    for column in table.c:
        if isinstance(column.type, sa.JSON):
            column.type.none_as_null = True  # a NULL archived from a json column is SQL NULL, not JSON null
    if keys and rows:
        taken = set()
        for start in range(0, len(rows), KEY_CHUNK):
            chunk = [tuple(row[k.name] for k in keys) for row in rows[start:start + KEY_CHUNK]]
            match = keys[0].in_([c[0] for c in chunk]) if len(keys) == 1 else sa.tuple_(*keys).in_(chunk)
            taken.update(tuple(r) for r in conn.execute(sa.select(*keys).where(match)))
        rows = [row for row in rows if tuple(row[k.name] for k in keys) not in taken]
    if rows:
        conn.execute(sa.insert(table), rows)
    return len(rows)
