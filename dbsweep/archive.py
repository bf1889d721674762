"""Where deleted rows go before they are gone: an archive table in the same transaction as the
delete, or one Parquet file per batch, fsynced before the batch commits. Restore reads them back."""

from __future__ import annotations

import json
import os
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .errors import BadInput
from .names import derived

RUN_ID, BATCH_NO, ARCHIVED_AT = "dbsweep_run_id", "dbsweep_batch_no", "dbsweep_archived_at"


class Change:
    """What a batch does to the rows its walker picked. The walker (or the dialect, for the forms
    only one database has) builds the DELETE that names those rows; the change carries it out,
    asking the dialect for the SQL of its own operation, and says in `ref` what the batch's ledger
    row records of it (an archive, a file, a moved table)."""

    ref: str | None = None
    # a bare DELETE and nothing else: a dialect may fold the batch's key search into the same statement
    plain_delete: bool = False

    def begin_batch(self, run_id: str, batch_no: int) -> None:
        self.run_id = run_id

    def apply(self, conn: sa.Connection, stmt: sa.Delete, table: sa.Table) -> int:
        raise NotImplementedError

    def delete_cte(self, dialect, stmt: sa.Delete, table: sa.Table, suffix: str) -> tuple[list, Any]:
        """This change as common table expressions of one bigger statement (several tables deleted
        in one round trip): (the CTEs, the one whose rows count the change)."""
        raise TypeError(f"{type(self).__name__} cannot be written inside one statement")


class NoArchive(Change):
    plain_delete = True

    def begin_batch(self, run_id: str, batch_no: int) -> None:
        self.run_id, self.ref = run_id, None

    def apply(self, conn: sa.Connection, stmt: sa.Delete, table: sa.Table) -> int:
        return conn.execute(stmt).rowcount

    def delete_cte(self, dialect, stmt: sa.Delete, table: sa.Table, suffix: str) -> tuple[list, Any]:
        gone = dialect.counted_delete_cte(stmt, suffix)
        return [gone], gone


def archive_table_for(table: sa.Table, columns: list[sa.Column] | None = None, suffix: str = "__archive",
                      looked_up: bool = False) -> sa.Table:
    """`<schema>.<table><suffix>`: the table's columns (or the given ones; no constraints, all
    nullable) plus the run, batch and time each row was saved. `looked_up`: read back batch by
    batch while the table keeps growing (previous values), so (run, batch) gets a B-tree."""
    copies = [sa.Column(c.name, c.type, nullable=True) for c in (table.c if columns is None else columns)]
    # BRIN on PostgreSQL otherwise: the archive is append-only, so run and batch follow the heap
    # order; a B-tree there cost a third of the archived purge's throughput (bench/archive.py)
    using = {} if looked_up else {"postgresql_using": "brin"}
    return sa.Table(
        derived(table.name, suffix), sa.MetaData(), *copies,
        sa.Column(RUN_ID, sa.String(32), nullable=False),
        sa.Column(BATCH_NO, sa.Integer, nullable=False),
        sa.Column(ARCHIVED_AT, sa.DateTime(timezone=True), nullable=False),
        sa.Index(derived(f"ix_{table.name}", f"{suffix}_{'batch' if looked_up else 'run'}"), RUN_ID, BATCH_NO, **using),
        schema=table.schema,
    )


class TableArchive(Change):
    def __init__(self, dialect, archive: sa.Table):
        self.dialect, self.archive = dialect, archive
        self.ref = archive.fullname

    @classmethod
    def ensure(cls, engine: sa.Engine, dialect, table: sa.Table) -> TableArchive:
        return cls(dialect, ensure_table(engine, archive_table_for(table), table))

    def begin_batch(self, run_id: str, batch_no: int) -> None:
        self.stamp = {RUN_ID: run_id, BATCH_NO: batch_no}

    def apply(self, conn: sa.Connection, stmt: sa.Delete, table: sa.Table) -> int:
        return self.dialect.delete_into_archive(conn, stmt, table, self.archive, self.stamp)

    def delete_cte(self, dialect, stmt: sa.Delete, table: sa.Table, suffix: str) -> tuple[list, Any]:
        gone, kept = dialect.archived_delete_cte(stmt, table, self.archive, self.stamp, suffix)
        return [gone, kept], kept


def ensure_table(engine: sa.Engine, wanted: sa.Table, source: sa.Table) -> sa.Table:
    """Create `wanted` on first use; refuse one that exists without the columns it needs."""
    with engine.begin() as conn:
        inspector = sa.inspect(conn)
        if inspector.has_table(wanted.name, schema=wanted.schema):
            existing = {c["name"] for c in inspector.get_columns(wanted.name, schema=wanted.schema)}
            missing = [c.name for c in wanted.c if c.name not in existing]
            if missing:
                raise BadInput(f"table '{wanted.fullname}' lacks columns {', '.join(missing)}: '{source.fullname}' "
                               "changed since it was created; rename the old one")
            for index in wanted.indexes:  # one made by an earlier dbsweep may lack a newer index
                index.create(conn, checkfirst=True)
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
        import pyarrow as pa
        import pyarrow.csv as pacsv

        data = self.dialect.delete_returning_csv(conn, stmt, table)
        if not data:  # nothing deleted: Arrow reads no CSV at all from an empty buffer
            _write_arrow(self.root / self.ref, self.schema.empty_table())
            return 0
        try:
            rows = pacsv.read_csv(pa.BufferReader(data), read_options=pacsv.ReadOptions(column_names=self.schema.names),
                                  parse_options=pacsv.ParseOptions(newlines_in_values=True),
                                  convert_options=pacsv.ConvertOptions(
                                      # only PostgreSQL's NULL (an unquoted empty field) is null: not
                                      # the text 'NULL', 'N/A' or 'nan', and a float NaN stays NaN
                                      column_types=self.schema, null_values=[""], strings_can_be_null=True,
                                      quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"]))
        except pa.ArrowInvalid as exc:
            if all(field.type == pa.string() for field in self.schema):
                raise
            self.schema = arrow_schema(table, text_only=True)
            raise RetryBatch(f"Parquet archive: {exc}; this run keeps every column as PostgreSQL text") from None
        _write_arrow(self.root / self.ref, rows)
        return rows.num_rows

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


def _write_arrow(path: Path, rows) -> None:
    """Written, fsynced and renamed into place, the folder fsynced too."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        # zstd without dictionaries: faster to write than the default (snappy, dictionaries tried on
        # every column, mostly unique keys and timestamps here) and about a third smaller
        pq.write_table(rows, handle, compression="zstd", use_dictionary=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


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
