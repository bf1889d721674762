"""Where deleted rows go before they are gone: an archive table in the same transaction as the
delete, or one Parquet file per batch, fsynced before the batch commits. Restore reads them back."""

from __future__ import annotations

import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .catalog import has_table, reflect_table
from .changes import (  # noqa: F401 (re-exported)
    ARCHIVED_AT,
    BATCH,
    BATCH_NO,
    RUN_ID,
    ArchiveTables,
    Change,
    NoArchive,
)
from .dialects import dialect_for
from .errors import BadInput
from .names import derived


def archive_table_for(table: sa.Table, suffix: str = "__archive") -> sa.Table:
    """`<schema>.<table><suffix>`: the table's columns (no constraints, all nullable) and one
    bigint naming the batch that saved the row in `archive_batches_for(...)`. No index: the
    archive is written far more often than read, and each extra byte per row or index entry
    costs the purge (bench/archive.py); a restore builds the index it needs first."""
    copies = [sa.Column(c.name, c.type, nullable=True) for c in table.c]
    return sa.Table(derived(table.name, suffix), sa.MetaData(), *copies,
                    sa.Column(BATCH, sa.BigInteger, nullable=False), schema=table.schema)


def archive_batches_for(archive: sa.Table) -> sa.Table:
    """`<archive>_batches`: one row per batch that wrote to the archive, numbering it (the
    archive rows' BATCH) and saying which run and ledger batch it was, and when."""
    return sa.Table(
        derived(archive.name, "_batches"), sa.MetaData(),
        sa.Column(BATCH, sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column(RUN_ID, sa.String(32), nullable=False),
        sa.Column(BATCH_NO, sa.Integer, nullable=False),
        sa.Column(ARCHIVED_AT, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.current_timestamp()),
        sa.UniqueConstraint(RUN_ID, BATCH_NO, name=derived(archive.name, "_batches_run")),
        schema=archive.schema,
    )


def stamped_copy_table(table: sa.Table, columns: list[sa.Column], suffix: str) -> sa.Table:
    """`<schema>.<table><suffix>`: the given columns (all nullable) and, on every row, the run,
    batch and time it was saved, with a B-tree on (run, batch): for copies read back batch by
    batch while they keep growing (a reset's previous values)."""
    return sa.Table(
        derived(table.name, suffix), sa.MetaData(), *[sa.Column(c.name, c.type, nullable=True) for c in columns],
        sa.Column(RUN_ID, sa.String(32), nullable=False),
        sa.Column(BATCH_NO, sa.Integer, nullable=False),
        sa.Column(ARCHIVED_AT, sa.DateTime(timezone=True), nullable=False),
        sa.Index(derived(f"ix_{table.name}", f"{suffix}_batch"), RUN_ID, BATCH_NO),
        schema=table.schema,
    )


def open_archive(conn: sa.Connection, archive_name: str, to_restore: bool = True) -> ArchiveTables:
    """An existing archive, by the name a ledger row gives. `to_restore`: it is about to be read
    back batch by batch, so its index on BATCH is built first if it is not there yet."""
    rows = reflect_table(conn, archive_name)
    if BATCH not in rows.c:
        raise BadInput(f"table '{rows.fullname}' is not a dbsweep archive (no column {BATCH})")
    batches = reflect_table(conn, archive_batches_for(rows).fullname)
    if to_restore:
        index = sa.Index(derived(f"ix_{rows.name}", "_batch"), rows.c[BATCH])
        if dialect_for(conn).index_state(conn, rows, index.name) == "missing":
            index.create(conn)
    return ArchiveTables(rows, batches)


class TableArchive(Change):
    one_statement = True

    def __init__(self, dialect, archive: ArchiveTables):
        self.dialect, self.archive = dialect, archive
        self.ref = archive.rows.fullname

    @classmethod
    def ensure(cls, engine: sa.Engine, dialect, table: sa.Table) -> TableArchive:
        rows = archive_table_for(table)
        batches = archive_batches_for(rows)
        with engine.begin() as conn:
            if sa.inspect(conn).has_table(rows.name, schema=rows.schema):
                upgrade_stamped_archive(conn, dialect, rows, batches)
        ensure_table(engine, batches, table)
        return cls(dialect, ArchiveTables(ensure_table(engine, rows, table), batches))

    def begin_batch(self, run_id: str, batch_no: int) -> None:
        self.stamp = {RUN_ID: run_id, BATCH_NO: batch_no}

    def apply(self, conn: sa.Connection, stmt: sa.Delete, table: sa.Table) -> int:
        return self.dialect.delete_into_archive(conn, stmt, table, self.archive, self.stamp)

    def delete_cte(self, dialect, stmt: sa.Delete, table: sa.Table, suffix: str) -> tuple[list, Any]:
        return dialect.archived_delete_cte(stmt, table, self.archive, self.stamp, suffix)


def upgrade_stamped_archive(conn: sa.Connection, dialect, rows: sa.Table, batches: sa.Table) -> None:
    """An archive an earlier dbsweep made stamps every row with its run, batch and time: move
    those to `batches`, number each row's batch, drop the three columns. One transaction."""
    inspector = sa.inspect(conn)
    existing = {c["name"] for c in inspector.get_columns(rows.name, schema=rows.schema)}
    if BATCH in existing or not {RUN_ID, BATCH_NO, ARCHIVED_AT} <= existing:
        return

    old = reflect_table(conn, rows.fullname)
    batches.create(conn, checkfirst=True)
    conn.execute(sa.insert(batches).from_select(
        [RUN_ID, BATCH_NO, ARCHIVED_AT],
        sa.select(old.c[RUN_ID], old.c[BATCH_NO], sa.func.min(old.c[ARCHIVED_AT]))
        .group_by(old.c[RUN_ID], old.c[BATCH_NO]).order_by(sa.func.min(old.c[ARCHIVED_AT]))))
    dialect.add_column(conn, old, sa.Column(BATCH, sa.BigInteger))
    old = reflect_table(conn, rows.fullname)
    b = batches.c
    conn.execute(sa.update(old).values({BATCH: sa.select(b[BATCH]).where(
        b[RUN_ID] == old.c[RUN_ID], b[BATCH_NO] == old.c[BATCH_NO]).scalar_subquery()}))
    for index in old.indexes:
        index.drop(conn)
    for name in (RUN_ID, BATCH_NO, ARCHIVED_AT):
        dialect.drop_column(conn, old, name)


def ensure_table(engine: sa.Engine, wanted: sa.Table, source: sa.Table) -> sa.Table:
    """Create `wanted` on first use; refuse one that exists without the columns it needs."""
    with engine.begin() as conn:
        if has_table(conn, wanted.name, wanted.schema):
            found = reflect_table(conn, wanted.fullname)
            fold = str.casefold if found.metadata.info.get("names_fold_case") else str
            existing = {fold(name) for name in found.c.keys()}
            missing = [c.name for c in wanted.c if fold(c.name) not in existing]
            if missing:
                raise BadInput(f"table '{wanted.fullname}' lacks columns {', '.join(missing)}: '{source.fullname}' "
                               "changed since it was created; rename the old one")
            dialect = dialect_for(conn)
            for index in wanted.indexes:  # one made by an earlier dbsweep may lack a newer index
                if dialect.index_state(conn, wanted, index.name) == "missing":
                    index.create(conn)
        else:
            wanted.create(conn)
    return wanted


class RetryBatch(Exception):
    """Roll the batch back and run it again (the executor retries it like a lock timeout)."""


class ParquetArchive(Change):
    """One file per batch: `<dir>/<run>/<table>-<batch>.parquet`. A batch that rolls back leaves a
    file the ledger never names; its retry (same batch number) replaces it.

    Where the dialect can stream the deleted rows as CSV (PostgreSQL: COPY (DELETE … RETURNING *)
    TO STDOUT), the rows go to Arrow without passing through Python objects: columns with an exact
    Arrow type get it, the others keep PostgreSQL's own text form (what pg_dump relies on), which
    restore hands back to PostgreSQL to parse. A value Arrow cannot read in a typed column (a
    timestamp 'infinity') rolls the batch back, and from then on every column keeps its text form."""

    def __init__(self, root: Path, table: sa.Table, dialect=None):
        self.root, self.table, self.dialect = root, table, dialect
        self.schema = arrow_schema(table) if dialect is not None and hasattr(dialect, "delete_returning_csv") else None

    def begin_batch(self, run_id: str, batch_no: int) -> None:
        self.ref = str(Path(run_id) / f"{self.table.fullname}-{batch_no:07d}.parquet")

    def apply(self, conn: sa.Connection, stmt: sa.Delete, table: sa.Table) -> int:
        if self.schema is not None:
            return self._apply_csv(conn, stmt, table)
        return self.write(self.dialect.delete_returning_rows(conn, stmt, table), table)

    def _apply_csv(self, conn: sa.Connection, stmt: sa.Delete, table: sa.Table) -> int:
        """The rows are parsed and encoded piece by piece on a worker thread while the next
        pieces still arrive (Arrow releases the GIL), so the file is nearly written when the
        DELETE ends; it is fsynced before this returns, so before the batch commits."""
        import pyarrow as pa

        path = self.root / self.ref
        with DurableFile(path) as handle:
            writer, pending = ParquetPieces(handle, self.schema), []
            try:
                for piece in self.dialect.delete_returning_csv(conn, stmt, table, PIECE_BYTES):
                    pending.append(PARQUET_WORKER.submit(writer.add, piece))
            finally:  # the worker is done with the file before it is closed, whatever happened
                wait(pending)
            try:
                for done in pending:
                    done.result()
            except pa.ArrowInvalid as exc:
                if all(field.type == pa.string() for field in self.schema):
                    raise
                self.schema = arrow_schema(table, text_only=True)
                raise RetryBatch(f"Parquet archive: {exc}; this run keeps every column as PostgreSQL text") from None
            writer.close()
        return writer.rows

    def write(self, rows: list, table: sa.Table) -> int:
        write_parquet(self.root / self.ref, table, rows)
        return len(rows)


def arrow_schema(table: sa.Table, text_only: bool = False):
    """Arrow types for the table's columns as PostgreSQL prints them in CSV: an exact Arrow type
    where there is one, else (and for every column with `text_only`) the text itself."""
    import pyarrow as pa

    return pa.schema([pa.field(col.name, pa.string() if text_only else _exact_arrow_type(col.type))
                      for col in table.c])


def _exact_arrow_type(kind: sa.types.TypeEngine):
    import pyarrow as pa

    if isinstance(kind, (sa.Integer, sa.BigInteger, sa.SmallInteger)):
        return pa.int64()
    if isinstance(kind, sa.Boolean):
        return pa.bool_()
    if isinstance(kind, sa.Float):
        return pa.float64()
    if isinstance(kind, sa.DateTime):
        return pa.timestamp("us", tz="UTC") if kind.timezone else pa.timestamp("us")
    if isinstance(kind, sa.Date):
        return pa.date32()
    return pa.string()  # numeric, uuid, json, intervals, arrays, ...: PostgreSQL's exact text


def write_parquet(path: Path, table: sa.Table, rows: list) -> None:
    import pyarrow as pa

    columns = {name: [_to_arrow(row[i]) for row in rows] for i, name in enumerate(table.c.keys())}
    _write_arrow(path, pa.table(columns) if rows else pa.table({k: pa.array([], pa.null()) for k in columns}))


# one thread per process, whatever the number of runs: its thread starts on first use and idles after
PARQUET_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dbsweep-parquet")
# a piece of COPY output parsed and encoded at a time: big enough that Arrow's per-call cost is
# small, small enough that the last piece (not overlapped with the DELETE) is quick
PIECE_BYTES = 1 << 20


class ParquetPieces:
    """CSV pieces parsed with the archive's Arrow schema, each written as it comes."""

    def __init__(self, handle, schema):
        import pyarrow.parquet as pq

        # zstd without dictionaries: faster to write than the default (snappy, dictionaries tried on
        # every column, mostly unique keys and timestamps here) and about a third smaller
        self.writer = pq.ParquetWriter(handle, schema, compression="zstd", use_dictionary=False)
        self.schema, self.rows = schema, 0

    def add(self, piece: bytes) -> None:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        # one thread: Arrow's parallel parse of a 1 MB piece costs 3x more than it saves (this
        # worker already runs beside the DELETE)
        rows = pacsv.read_csv(pa.BufferReader(piece), read_options=pacsv.ReadOptions(column_names=self.schema.names,
                                                                                     use_threads=False),
                              parse_options=pacsv.ParseOptions(newlines_in_values=True),
                              convert_options=pacsv.ConvertOptions(
                                  # only PostgreSQL's NULL (an unquoted empty field) is null: not
                                  # the text 'NULL', 'N/A' or 'nan', and a float NaN stays NaN
                                  column_types=self.schema, null_values=[""], strings_can_be_null=True,
                                  quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"]))
        self.writer.write_table(rows)
        self.rows += rows.num_rows

    def close(self) -> None:
        if self.rows == 0:  # a file Arrow reads back as an empty table of the schema
            self.writer.write_table(self.schema.empty_table())
        self.writer.close()


class DurableFile:
    """A file written beside its place, fsynced and renamed into place, the folder fsynced too;
    left unnamed (`.partial`) if the block fails."""

    def __init__(self, path: Path):
        self.path, self.partial = path, path.with_name(path.name + ".partial")

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.partial, "wb")
        return self.handle

    def __exit__(self, kind, error, trace) -> None:
        if kind is not None:
            self.handle.close()
            return
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.partial, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _write_arrow(path: Path, rows) -> None:
    import pyarrow.parquet as pq

    with DurableFile(path) as handle:
        pq.write_table(rows, handle, compression="zstd", use_dictionary=False)


def read_parquet(path: Path, table: sa.Table) -> list[dict[str, Any]]:
    """The archived rows as Python values for the table's column types."""
    return [{name: _from_arrow(table.c[name], value) for name, value in record.items()}
            for record in _read_arrow(path).to_pylist()]


def read_parquet_as_text(path: Path) -> dict[str, list[str | None]] | None:
    """Each archived column as the text PostgreSQL parses back into exactly the archived value
    (its own text form kept as it is; typed values printed in a form its input functions read);
    None when a column has an Arrow type with no such form here (lists, structs)."""
    archived = _read_arrow(path)
    columns = {}
    for field, values in zip(archived.schema, archived.columns):
        to_text = _text_form(field.type)
        if to_text is None:
            return None
        columns[field.name] = [None if v is None else to_text(v) for v in values.to_pylist()]
    return columns


def _text_form(arrow_type):
    import pyarrow as pa
    import pyarrow.types as at

    if any(is_kind(arrow_type) for is_kind in (at.is_string, at.is_large_string, at.is_null, at.is_integer,
                                                at.is_decimal)):
        return str
    if at.is_floating(arrow_type):
        return lambda v: "NaN" if v != v else ("Infinity" if v == float("inf") else
                                                ("-Infinity" if v == float("-inf") else repr(v)))
    if at.is_boolean(arrow_type):
        return lambda v: "t" if v else "f"
    if at.is_timestamp(arrow_type) or at.is_date(arrow_type) or at.is_time(arrow_type):
        return lambda v: v.isoformat()
    if at.is_binary(arrow_type) or at.is_large_binary(arrow_type):
        return lambda v: "\\x" + v.hex()
    if arrow_type == pa.duration("us"):
        return lambda v: f"{v.days} days {v.seconds} seconds {v.microseconds} microseconds"
    return None


def _read_arrow(path: Path):
    import pyarrow.parquet as pq

    if not path.exists():
        raise BadInput(f"archive file {path} is missing: it is named in the ledger, so it was written before the "
                       "batch committed; restore it from backup and retry")
    return pq.read_table(path)


def _to_arrow(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _from_arrow(column: sa.Column, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(column.type, sa.Uuid) and isinstance(value, str):
        return uuid.UUID(value)
    if isinstance(column.type, sa.JSON) and isinstance(value, str):
        return json.loads(value)
    if isinstance(column.type, sa.Numeric) and not isinstance(column.type, sa.Float) and isinstance(value, str):
        return Decimal(value)
    return value


def make_archive(mode: str, engine: sa.Engine, dialect, table: sa.Table, archive_dir: Path | None):
    if mode == "table":
        return TableArchive.ensure(engine, dialect, table)
    if mode == "parquet":
        if archive_dir is None:
            raise BadInput("archive = 'parquet' needs an archive directory")
        return ParquetArchive(archive_dir, table, dialect)
    return NoArchive()
