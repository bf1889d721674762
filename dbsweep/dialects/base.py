"""What every dialect provides. Portable statements are SQLAlchemy Core; the subclasses
override where a database has a better or a different way."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from ..changes import ARCHIVED_AT, BATCH, BATCH_NO, RUN_ID, ArchiveTables, NoArchive
from ..errors import BadInput
from ..keys import after_key, up_to_key

NO_ARCHIVE = NoArchive()


@dataclass
class BatchOutcome:
    rows: int
    last_key: list | None  # the cursor after this batch; None when the walk is finished


class Dialect:
    name = "generic"
    ledger_schema: str | None = "dbsweep"
    supports_row_locator = False  # ctid (PostgreSQL) for tables without a primary key
    dml_in_cte = False  # INSERT/UPDATE/DELETE inside WITH (PostgreSQL)
    range_walk = True  # integer keys may be walked by key ranges sized from their density
    names_fold_case = False  # identifiers match whatever their case (SQL Server's default collation)

    def same_name(self, a: str, b: str) -> bool:
        """Whether two identifiers name the same object here."""
        return a.casefold() == b.casefold() if self.names_fold_case else a == b

    def has_table(self, conn: sa.Connection, name: str, schema: str | None) -> bool:
        return sa.inspect(conn).has_table(name, schema=schema)

    def table_names(self, conn: sa.Connection, schema: str | None) -> list[str]:
        return sa.inspect(conn).get_table_names(schema=schema)

    def column_spellings(self, conn: sa.Connection, schema: str | None, table: str) -> dict[str, str]:
        """Where the catalog views fold column names (Babelfish's sys.columns: lower case), each
        folded name -> the name as created; empty where reflection keeps the case."""
        return {}

    def primary_key_columns(self, conn: sa.Connection, table: sa.Table) -> list[str]:
        """The primary key's columns, in order, where reflection misses them (Babelfish); empty
        where reflection found them."""
        return []

    def quote(self, conn: sa.Connection, name: str) -> str:
        return conn.dialect.identifier_preparer.quote(name)

    def set_session_timeouts(self, conn: sa.Connection, lock_s: float, statement_s: float, local: bool = False) -> None:
        """Lock and statement timeouts for every later statement on this connection (`local`: only
        until its transaction ends, where the database can)."""

    def ensure_schema(self, conn: sa.Connection, schema: str) -> None:
        if not sa.inspect(conn).has_schema(schema):
            conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))

    def table_bytes(self, conn: sa.Connection, table: sa.Table) -> int | None:
        return None

    def analyze(self, conn: sa.Connection, table: sa.Table) -> None:
        """Refresh planner statistics after a large change."""

    def vacuum(self, conn: sa.Connection, table: sa.Table) -> None:
        """Reclaim space where the database allows it outside a transaction."""

    def replica_lag_seconds(self, conn: sa.Connection) -> float | None:
        """The worst replica's replay lag; None when there is no replica (or no way to know)."""
        return None

    # health: what the database's own statistics say (None / empty where it keeps none) -----
    def server_version(self, conn: sa.Connection) -> str:
        return f"{conn.dialect.name} {'.'.join(map(str, conn.dialect.server_version_info or ()))}".strip()

    def connection_usage(self, conn: sa.Connection) -> tuple[int, int] | None:
        """(client connections now, the server's limit)."""
        return None

    def table_stats(self, conn: sa.Connection, table: sa.Table) -> tuple[int, int, int, object] | None:
        """(live rows, dead rows, bytes with indexes, last vacuum) from the statistics views."""
        return None

    def sessions(self, conn: sa.Connection, longer_than_s: float) -> list[dict]:
        """Other sessions that are blocked, running or idle in a transaction for longer than that:
        pid, state, blocked_by, for (seconds), query (its start)."""
        return []

    def largest_indexes(self, conn: sa.Connection, tables: list[sa.Table], limit: int) -> list[tuple[str, str, int]]:
        """(index, table, bytes), largest first."""
        return []

    # catalog: what depends on a table (retire) and moving it --------------------------------
    def inbound_foreign_keys(self, conn: sa.Connection, table: sa.Table) -> list[str]:
        raise BadInput(f"retire is not supported on {self.name}: it cannot read dependencies from the catalog")

    dependent_views = dependent_routines = inbound_foreign_keys

    def add_column(self, conn: sa.Connection, table: sa.Table, column: sa.Column) -> None:
        """ALTER TABLE t ADD c <type>, nullable and with no default: no rewrite of the table."""
        prep = conn.dialect.identifier_preparer
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE {prep.format_table(table)} ADD {prep.quote(column.name)} {kind}"))

    def widen_to_text(self, conn: sa.Connection, table: sa.Table, column: sa.Column) -> None:
        """ALTER a column of a bounded string type to the unbounded one (`column.type`)."""
        prep = conn.dialect.identifier_preparer
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE {prep.format_table(table)} ALTER COLUMN {prep.quote(column.name)} TYPE {kind}"))

    def drop_column(self, conn: sa.Connection, table: sa.Table, name: str) -> None:
        prep = conn.dialect.identifier_preparer
        conn.execute(sa.text(f"ALTER TABLE {prep.format_table(table)} DROP COLUMN {prep.quote(name)}"))

    def waiting_sessions(self, conn: sa.Connection) -> int | None:
        """Other sessions of this database waiting on a lock now (None: the dialect cannot tell)."""
        return None

    def active_sessions(self, conn: sa.Connection) -> int | None:
        """The most other sessions of this database seen running a statement, over a few quick
        looks (None: the dialect cannot tell)."""
        return None

    def throttle_value(self, conn: sa.Connection, query: str) -> float | None:
        """A policy's throttle query, in a read-only transaction: its first column of its first row."""
        with conn.begin():
            self.read_only(conn)
            value = conn.exec_driver_sql(query).scalar()
        return None if value is None else float(value)

    def read_only(self, conn: sa.Connection) -> None:
        """Make the current transaction read-only where the database can."""

    def referencing_keys(self, conn: sa.Connection, table: sa.Table) -> list[dict]:
        """Foreign keys into `table`, its own self-references included: name, schema, table, columns,
        referred_columns, on_delete. Portable form: the inspector, over the default schema and the
        table's own."""
        inspector = sa.inspect(conn)
        found = []
        for schema in dict.fromkeys([table.schema, None]):
            for (source_schema, source), fks in inspector.get_multi_foreign_keys(schema=schema).items():
                for fk in fks:
                    same = fk["referred_table"] == table.name and (fk.get("referred_schema") or table.schema) == table.schema
                    if same:
                        found.append({"name": fk["name"], "schema": source_schema, "table": source,
                                      "columns": fk["constrained_columns"], "referred_columns": fk["referred_columns"],
                                      "on_delete": (fk.get("options") or {}).get("ondelete", "NO ACTION").upper()})
        return found

    def databases_like(self, conn: sa.Connection, pattern: str) -> list[str]:
        """The server's databases whose names match the LIKE pattern (a fleet's targets)."""
        raise BadInput(f"databases_like is not supported on {self.name}: list the targets")

    def default_schema(self, conn: sa.Connection) -> str | None:
        return sa.inspect(conn).default_schema_name

    def rename_table(self, conn: sa.Connection, table: sa.Table, new_name: str) -> None:
        prep = conn.dialect.identifier_preparer
        conn.execute(sa.text(f"ALTER TABLE {prep.format_table(table)} RENAME TO {prep.quote(new_name)}"))

    def drop_table(self, conn: sa.Connection, table: sa.Table) -> None:
        conn.execute(sa.text(f"DROP TABLE {conn.dialect.identifier_preparer.format_table(table)}"))

    def cannot_move_tables(self, conn: sa.Connection) -> str | None:
        """Why `move_table` cannot run on this server (None: it can); asked when a phase is planned."""
        return f"moving a table to another schema is not supported on {self.name}"

    def move_table(self, conn: sa.Connection, table: sa.Table, schema: str, new_name: str) -> None:
        raise BadInput(self.cannot_move_tables(conn))

    def try_phase_lock(self, conn: sa.Connection, key: str) -> bool:
        """Session-level lock so one phase never runs twice at once; True when acquired."""
        return True

    def release_phase_lock(self, conn: sa.Connection, key: str) -> None:
        pass

    # unique constraints and helper indexes (dedupe) ---------------------------------------
    nulls_not_distinct = False  # a unique constraint can count NULLs as equal (PostgreSQL 15+)

    def unique_index(self, table: sa.Table, name: str, columns: list[str], nulls_equal: bool,
                     concurrently: bool = False) -> sa.Index:
        """The index a unique constraint on `columns` stands on, NULLs counted as SQL does (distinct)
        unless `nulls_equal`."""
        if nulls_equal:
            raise BadInput(f"nulls = \"equal\" needs a database that can enforce it (PostgreSQL 15+), not {self.name}")
        return sa.Index(name, *(table.c[c] for c in columns), unique=True)

    def build_index(self, engine: sa.Engine, index: sa.Index, lock_s: float) -> None:
        """Create `index` (portable: a plain CREATE INDEX in its own transaction)."""
        with engine.begin() as conn:
            conn.execute(sa.schema.CreateIndex(index, if_not_exists=False))

    def indexes(self, conn: sa.Connection, table: sa.Table) -> list[dict]:
        """The table's primary key, unique constraints and indexes, each: name, columns (as the
        table's columns are named), unique, primary, constraint (a unique constraint, not only an
        index), partial (filtered), descending (its columns sorted descending)."""
        inspector = sa.inspect(conn)
        found = []
        pk = inspector.get_pk_constraint(table.name, schema=table.schema)
        if pk.get("constrained_columns"):
            found.append(_index(pk.get("name") or "", pk["constrained_columns"], primary=True, constraint=True))
        try:
            for uc in inspector.get_unique_constraints(table.name, schema=table.schema):
                found.append(_index(uc["name"], uc["column_names"], constraint=True))
        except NotImplementedError:
            pass
        for ix in inspector.get_indexes(table.name, schema=table.schema):
            options = ix.get("dialect_options", {})
            sorting = ix.get("column_sorting", {})
            found.append(_index(ix["name"], ix["column_names"], unique=bool(ix.get("unique")),
                                partial=any(k.endswith("_where") and v is not None for k, v in options.items()),
                                descending={c for c, how in sorting.items() if "desc" in how}))
        return found

    def index_state(self, conn: sa.Connection, table: sa.Table, name: str) -> str:
        """"valid", "invalid" (a failed concurrent build left it) or "missing"."""
        return "missing" if self.index_named(conn, table, name) is None else "valid"

    def index_named(self, conn: sa.Connection, table: sa.Table, name: str) -> dict | None:
        """The entry of `indexes` that the name `name` was given to, or None."""
        return next((ix for ix in self.indexes(conn, table) if self.same_name(ix["name"], name)), None)

    def drop_index(self, engine: sa.Engine, table: sa.Table, name: str) -> None:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropIndex(sa.Index(name, _table=table)))

    def constraint_using_index(self, conn: sa.Connection, table: sa.Table, name: str, columns: list[str]) -> None:
        """Turn the unique index `name` into a table constraint, where the database has that form
        (elsewhere the unique index is the constraint)."""

    def guard_key(self, conn: sa.Connection, table: sa.Table, name: str, natural_key: list[str], key: list[str],
                  nulls_equal: bool) -> None:
        """Refuse new duplicates of `natural_key` until the unique constraint exists, where the
        database can (a trigger); elsewhere the constraint is added in one transaction anyway."""

    def drop_key_guard(self, conn: sa.Connection, table: sa.Table, name: str) -> None:
        """Remove what `guard_key` installed, if it is there."""

    def drop_unique(self, conn: sa.Connection, table: sa.Table, name: str) -> None:
        """Drop the unique constraint or index `name` (undoing a dedupe)."""
        found = self.index_named(conn, table, name)
        found = [found] if found is not None and not found["primary"] else []
        prep = conn.dialect.identifier_preparer
        if any(ix["constraint"] for ix in found):
            conn.execute(sa.text(f"ALTER TABLE {prep.format_table(table)} DROP CONSTRAINT {prep.quote(name)}"))
        elif found:
            conn.execute(sa.schema.DropIndex(sa.Index(name, _table=table)))

    def delete_batch(
        self, conn: sa.Connection, table: sa.Table, keys: list[sa.Column], selection: sa.ColumnElement,
        after: list | None, last: list, size: int, sink=NO_ARCHIVE,
    ) -> BatchOutcome:
        """Key-set batch: find the key of the size-th selected row after the cursor, then delete
        the selected rows in (cursor, that key]. Never rescans what earlier batches removed."""
        window = [selection, up_to_key(keys, last)]
        if after is not None:
            window.append(after_key(keys, after))
        boundary = conn.execute(
            sa.select(*keys).where(*window).order_by(*keys).offset(size - 1).limit(1)
        ).first()
        upper = list(boundary) if boundary is not None else last
        rows = sink.apply(conn, sa.delete(table).where(*window, up_to_key(keys, upper)), table)
        return BatchOutcome(rows=rows, last_key=upper if boundary is not None else None)

    def delete_key_range(self, conn: sa.Connection, table: sa.Table, key: sa.Column, selection: sa.ColumnElement,
                         after: int | None, upto: int, sink=NO_ARCHIVE) -> int:
        """Integer keys: delete the selected rows with after < key <= upto (one index range scan)."""
        clauses = [selection, key <= upto]
        if after is not None:
            clauses.append(key > after)
        return sink.apply(conn, sa.delete(table).where(*clauses), table)

    def update_saving_previous(self, conn: sa.Connection, table: sa.Table, previous: sa.Table, keys: list[sa.Column],
                               targets: dict[str, sa.ColumnElement], where: sa.ColumnElement, stamp: dict) -> int:
        """Save the current values of the rows `where` selects into `previous`, then update them, in
        the caller's transaction. Portable form: INSERT ... SELECT, then UPDATE, same predicate."""
        names = saved_columns(previous)
        conn.execute(sa.insert(previous).from_select(
            [*names, RUN_ID, BATCH_NO, ARCHIVED_AT],
            sa.select(*[table.c[n] for n in names], sa.literal(stamp[RUN_ID], sa.String),
                      sa.literal(stamp[BATCH_NO], sa.Integer), sa.func.current_timestamp()).where(where),
        ))
        return conn.execute(sa.update(table).where(where).values(targets)).rowcount

    def refuses_explicit_identity(self, table: sa.Table) -> bool:
        """Whether a plain INSERT of archived values into `table` would be refused for its identity
        column: GENERATED ALWAYS refuses them (a BY DEFAULT identity takes them as given)."""
        return any(c.identity is not None and c.identity.always for c in table.c)

    def cannot_restore_into(self, conn: sa.Connection, table: sa.Table) -> str | None:
        """Why archived rows could not be put back into `table` on this server (None: they can).
        Asked when a phase that archives is planned, so a change whose undo cannot run never starts."""
        return None

    def insert_select_overriding_identity(self, conn: sa.Connection, table: sa.Table, names: list[str],
                                          source: sa.Select) -> int:
        """INSERT ... SELECT that writes the archived values of an identity column that refuses them."""
        raise BadInput(f"restoring into '{table.fullname}' (a GENERATED ALWAYS identity column) is not supported on "
                       f"{self.name}")

    def insert_text_rows(self, conn: sa.Connection, table: sa.Table, columns: dict[str, list]) -> int | None:
        """Put archived rows back from their text form (one list per column), each value parsed by its
        column type, skipping rows whose key is taken again; how many went in, or None where the
        database has no such way and the rows go back as Python values (`insertable_rows`)."""
        return None

    def insertable_rows(self, table: sa.Table, rows: list[dict]) -> list[dict]:
        """Archived rows as the driver must bind them for an INSERT into `table` to store them exactly."""
        return rows

    def in_values(self, column: sa.ColumnElement, values: list) -> sa.ColumnElement:
        """column IN (values)."""
        return column.in_(values)

    def in_shared_values(self, key: sa.ColumnElement, values: list):
        """A function giving `pointer IN (values)` for any column, all of one statement's uses
        sending the values once where the database allows (portable form: each its own list)."""
        return lambda pointer: self.in_values(pointer, values)

    def delete_some(self, conn: sa.Connection, table: sa.Table, where: sa.ColumnElement, limit: int,
                    sink=NO_ARCHIVE) -> int:
        """Delete at most `limit` rows matching `where`, any of them (the caller loops until fewer
        come back; no limit: all of them). Portable form: by primary key through a LIMIT subquery."""
        if limit is None:
            return sink.apply(conn, sa.delete(table).where(where), table)
        keys = list(table.primary_key.columns)
        if not keys:
            raise BadInput(f"table '{table.fullname}' has no primary key; dbsweep needs one on {self.name}")
        some = sa.select(*keys).where(where).limit(limit)
        match = keys[0].in_(some) if len(keys) == 1 else sa.tuple_(*keys).in_(some)
        return sink.apply(conn, sa.delete(table).where(match), table)

    def delete_returning_rows(self, conn: sa.Connection, stmt: sa.Delete, table: sa.Table) -> list:
        """Delete and return the deleted rows (whole), in the caller's transaction."""
        return conn.execute(stmt.returning(*table.c)).all()

    def open_archive_batch(self, conn: sa.Connection, archive: ArchiveTables, stamp: dict) -> int:
        """Number this ledger batch in the archive's batch table, in the caller's transaction."""
        batches = archive.batches
        return conn.execute(sa.insert(batches).values({RUN_ID: stamp[RUN_ID], BATCH_NO: stamp[BATCH_NO]})
                            .returning(batches.c[BATCH])).scalar_one()

    def delete_into_archive(self, conn: sa.Connection, stmt: sa.Delete, table: sa.Table, archive: ArchiveTables,
                            stamp: dict) -> int:
        """Delete and copy the deleted rows into the archive, in the caller's transaction. Portable
        form: DELETE ... RETURNING, then the batch numbered, then one multi-row INSERT."""
        rows = conn.execute(stmt.returning(*table.c)).all()
        if rows:
            batch = self.open_archive_batch(conn, archive, stamp)
            conn.execute(sa.insert(archive.rows), [{**dict(zip(table.c.keys(), row)), BATCH: batch} for row in rows])
        return len(rows)


def _index(name: str, columns: list, unique: bool = True, primary: bool = False, constraint: bool = False,
           partial: bool = False, descending: set | None = None) -> dict:
    return {"name": name, "columns": list(columns), "unique": unique, "primary": primary, "constraint": constraint,
            "partial": partial, "descending": set(descending or ())}


def saved_columns(archive: sa.Table) -> list[str]:
    """The copied columns of an archive or previous-values table (not its stamp)."""
    return [c.name for c in archive.c if c.name not in (RUN_ID, BATCH_NO, ARCHIVED_AT, BATCH)]
