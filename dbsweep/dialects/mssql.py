"""SQL Server (pymssql). The SQL Server tier of the tests runs these statements against Babelfish
for PostgreSQL (a T-SQL engine); where Babelfish differs from SQL Server, the dialect decides by
`is_babelfish`. tests/test_mssql.py also compiles each with SQLAlchemy's mssql dialect.

Statements are built by `*_statement` functions that need only a SQLAlchemy dialect, so a test
can compile them without a server; the methods execute them."""

from __future__ import annotations

import contextlib
import hashlib
import re
from datetime import datetime, time

import sqlalchemy as sa
from sqlalchemy.dialects import mssql as mssql_types
from sqlalchemy.engine import Dialect as SqlDialect

from ..changes import ARCHIVED_AT, BATCH, BATCH_NO, RUN_ID
from .base import Dialect, saved_columns
from .errors import mssql_number


def named(sql_dialect: SqlDialect) -> SqlDialect:
    """The same dialect with :name parameters, so compiled pieces can be joined into one text()."""
    return type(sql_dialect)(paramstyle="named")


def _compile(stmt, sql_dialect: SqlDialect):
    return stmt.compile(dialect=named(sql_dialect), compile_kwargs={"render_postcompile": True})


def _split_where(stmt, without_where, sql_dialect: SqlDialect) -> tuple[str, str, dict]:
    """(head, ' WHERE ...', params): T-SQL puts OUTPUT between the two."""
    full, head = _compile(stmt, sql_dialect), _compile(without_where, sql_dialect)
    if not full.string.startswith(head.string):
        raise AssertionError("unexpected statement shape while placing OUTPUT")
    return head.string, full.string[len(head.string):], dict(full.params)


def _output(prefix: str, columns: list[str], into: sa.Table | None, sql_dialect: SqlDialect,
            stamp: dict[str, str] | None = None) -> str:
    """OUTPUT <prefix>.columns [INTO table (columns, stamp columns)]; `stamp`: column -> value SQL."""
    prep = sql_dialect.identifier_preparer
    values = [f"{prefix}.{prep.quote(c)}" for c in columns]
    if into is None:
        return " OUTPUT " + ", ".join(values)
    values += list(stamp.values())
    targets = ", ".join(prep.quote(c) for c in [*columns, *stamp])
    return f" OUTPUT {', '.join(values)} INTO {prep.format_table(into)} ({targets})"


def delete_statement(sql_dialect: SqlDialect, table: sa.Table, where, top: int | None = None,
                     archive: sa.Table | None = None, stamp: dict | None = None, output_rows: bool = False) -> sa.TextClause:
    """DELETE TOP (n) FROM t [OUTPUT deleted.* INTO archive (...)] [OUTPUT deleted.*] WHERE ...
    The WHERE is a key window holding at most n selected rows, so TOP is a guard, never a cut."""
    head, tail, params = _split_where(sa.delete(table).where(where), sa.delete(table), sql_dialect)
    if top is not None:
        head = head.replace("DELETE FROM ", f"DELETE TOP ({int(top)}) FROM ", 1)
    columns = list(table.c.keys())
    output = _output("deleted", columns, archive, sql_dialect, {BATCH: ":dbsweep_batch"}) if archive is not None else ""
    if output_rows:
        output += _output("deleted", columns, None, sql_dialect)
    if archive is not None:
        params.update(dbsweep_batch=stamp[BATCH])
    return sa.text(head + output + tail).bindparams(**params)


def update_statement(sql_dialect: SqlDialect, table: sa.Table, previous: sa.Table, targets: dict, where,
                     stamp: dict) -> sa.TextClause:
    """UPDATE t SET ... OUTPUT deleted.<key and reset columns> INTO previous (...) WHERE ..."""
    head, tail, params = _split_where(sa.update(table).where(where).values(targets),
                                      sa.update(table).values(targets), sql_dialect)
    params.update(dbsweep_run_id=stamp[RUN_ID], dbsweep_batch_no=stamp[BATCH_NO])
    saved = {RUN_ID: ":dbsweep_run_id", BATCH_NO: ":dbsweep_batch_no", ARCHIVED_AT: "SYSUTCDATETIME()"}
    return sa.text(head + _output("deleted", saved_columns(previous), previous, sql_dialect, saved) + tail
                   ).bindparams(**params)


def identity_insert_statement(sql_dialect: SqlDialect, table: sa.Table, on: bool) -> sa.TextClause:
    """SET IDENTITY_INSERT t ON|OFF: a session setting, for one table of the session at a time."""
    return sa.text(f"SET IDENTITY_INSERT {sql_dialect.identifier_preparer.format_table(table)} {'ON' if on else 'OFF'}")


def lock_timeout_statement(lock_s: float) -> sa.TextClause:
    return sa.text(f"SET LOCK_TIMEOUT {int(lock_s * 1000)}")


INBOUND_FOREIGN_KEYS = sa.text("""
    SELECT fk.name, OBJECT_SCHEMA_NAME(fk.parent_object_id) + '.' + OBJECT_NAME(fk.parent_object_id) AS child
    FROM sys.foreign_keys fk
    WHERE fk.referenced_object_id = OBJECT_ID(:t) AND fk.parent_object_id <> fk.referenced_object_id
    ORDER BY 2, 1""")

DEPENDENT_OBJECTS = sa.text("""
    SELECT DISTINCT o.type_desc, OBJECT_SCHEMA_NAME(d.referencing_id) + '.' + OBJECT_NAME(d.referencing_id) AS name
    FROM sys.sql_expression_dependencies d JOIN sys.objects o ON o.object_id = d.referencing_id
    WHERE d.referenced_id = OBJECT_ID(:t)
    ORDER BY 2""")

APPLOCK = sa.text("DECLARE @r int; EXEC @r = sp_getapplock @Resource = :k, @LockMode = 'Exclusive', "
                  "@LockOwner = 'Session', @LockTimeout = 0; SELECT @r")
RELEASE_APPLOCK = sa.text("EXEC sp_releaseapplock @Resource = :k, @LockOwner = 'Session'")

def applock_resource(conn: sa.Connection, key: str) -> str:
    """The application lock's name: the key within this database. SQL Server scopes an application
    lock to its database already; Babelfish holds every T-SQL database in one PostgreSQL database,
    where two databases' phases of the same name would otherwise exclude each other. At most the
    255 characters sp_getapplock takes."""
    resource = f"{conn.execute(sa.text('SELECT DB_NAME()')).scalar()}:{key}"
    if len(resource) <= 255:
        return resource
    return f"{resource[:190]}:{hashlib.sha256(resource.encode()).hexdigest()}"


TRIGGERS_ON = sa.text("SELECT name FROM sys.triggers WHERE parent_id = OBJECT_ID(:t) ORDER BY name")


def rename_statement(sql_dialect: SqlDialect, table: sa.Table, new_name: str) -> sa.TextClause:
    """sp_rename with @objtype 'OBJECT' (Babelfish needs it; SQL Server takes it). The old name is
    written `schema.name` without brackets, which both read (spaces included), unless a part holds a
    dot or a bracket: then only the bracketed form can say it."""
    parts = [p for p in (table.schema, table.name) if p]
    plain = not any(c in part for part in parts for c in ".[]")
    old = ".".join(parts) if plain else sql_dialect.identifier_preparer.format_table(table)
    return sa.text("EXEC sp_rename @objname = :old, @newname = :new, @objtype = 'OBJECT'").bindparams(old=old, new=new_name)


def move_statement(sql_dialect: SqlDialect, table: sa.Table, schema: str) -> sa.TextClause:
    prep = sql_dialect.identifier_preparer
    return sa.text(f"ALTER SCHEMA {prep.quote(schema)} TRANSFER {prep.format_table(table)}")


def create_schema_statement(sql_dialect: SqlDialect, schema: str) -> sa.TextClause:
    quoted = sql_dialect.identifier_preparer.quote(schema).replace("'", "''")
    return sa.text(f"IF SCHEMA_ID(:s) IS NULL EXEC('CREATE SCHEMA {quoted}')").bindparams(s=schema)


NO_TRANSACTION = 3903  # "ROLLBACK can only be used in transaction blocks"


def create_engine(url: sa.URL, **kw) -> sa.Engine:
    """An engine for SQL Server: no table-comment probe (dbsweep reads no comments; the probe's
    function is missing on some T-SQL servers, Babelfish among them), and a ROLLBACK the server
    answers with "no transaction" taken as done. An error that rolled the transaction back on the
    server already (Babelfish does so for any error it maps to none of SQL Server's numbers) would
    otherwise be hidden behind the failed ROLLBACK; and pymssql, which opens each transaction with
    BEGIN TRAN after the last one ended, opens none after a failed ROLLBACK, so every later statement
    of the session would commit on its own. The transaction is opened again here."""
    kw.setdefault("supports_comments", False)
    engine = sa.create_engine(url, **kw)
    rollback = engine.dialect.do_rollback

    def do_rollback(dbapi_connection):
        try:
            rollback(dbapi_connection)
        except Exception as exc:
            if mssql_number(exc) != NO_TRANSACTION:
                raise
            if not getattr(dbapi_connection, "autocommit_state", False):
                cursor = dbapi_connection.cursor()
                cursor.execute("IF @@TRANCOUNT = 0 BEGIN TRAN")
                cursor.close()

    engine.dialect.do_rollback = do_rollback
    return engine


COLUMN_SPELLINGS = sa.text("""
    SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS
    WHERE TABLE_SCHEMA = COALESCE(:s, SCHEMA_NAME()) AND TABLE_NAME = :t""")


PRIMARY_KEY_COLUMNS = sa.text("""
    SELECT c.name FROM sys.indexes i
    JOIN sys.index_columns ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id
    JOIN sys.columns c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
    WHERE i.object_id = OBJECT_ID(:t) AND i.is_primary_key = 1
    ORDER BY ic.key_ordinal""")


INDEXES = sa.text("""
    SELECT i.name, i.is_unique, i.is_primary_key, i.is_unique_constraint, i.has_filter, c.name AS column_name,
           ic.is_descending_key
    FROM sys.indexes i
    JOIN sys.index_columns ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id AND ic.is_included_column = 0
    JOIN sys.columns c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
    WHERE i.object_id = OBJECT_ID(:t) AND i.name IS NOT NULL
    ORDER BY i.index_id, ic.key_ordinal""")
TABLE_BY_ID = sa.text("SELECT 1 FROM sys.tables WHERE object_id = OBJECT_ID(:t)")
TABLES_IN_SCHEMA = sa.text("""
    SELECT t.name FROM sys.tables t JOIN sys.schemas s ON s.schema_id = t.schema_id
    WHERE s.name = COALESCE(:s, SCHEMA_NAME()) ORDER BY t.name""")


def is_babelfish(conn: sa.Connection) -> bool:
    """Whether the server is Babelfish for PostgreSQL (a T-SQL engine over PostgreSQL), asked once
    per pooled connection: where it differs from SQL Server, the dialect decides by this."""
    info = conn.connection.info
    if "babelfish" not in info:
        info["babelfish"] = bool(conn.execute(sa.text("SELECT CAST(SERVERPROPERTY('Babelfish') AS int)")).scalar())
    return info["babelfish"]


class MssqlDialect(Dialect):
    name = "mssql"
    names_fold_case = True  # the default collation is case-insensitive, and Babelfish's catalog folds names

    def ensure_schema(self, conn, schema):
        conn.execute(create_schema_statement(conn.dialect, schema))  # T-SQL has no CREATE SCHEMA IF NOT EXISTS

    def primary_key_columns(self, conn, table):
        if table.primary_key.columns or not is_babelfish(conn):
            return []  # SQLAlchemy reads SQL Server's keys; Babelfish's sys.key_constraints do not match its indexes
        names = conn.execute(PRIMARY_KEY_COLUMNS, self._name(conn, table)).scalars().all()
        by_fold = {c.name.casefold(): c.name for c in table.c}
        return [by_fold.get(n.casefold(), n) for n in names]

    # Babelfish's INFORMATION_SCHEMA (which SQLAlchemy lists tables from) keeps a table's old name
    # after sp_rename; sys.tables has the current one (in lower case)
    def has_table(self, conn, name, schema):
        if not is_babelfish(conn):
            return super().has_table(conn, name, schema)
        quoted = sa.Table(name, sa.MetaData(), schema=schema)
        return conn.execute(TABLE_BY_ID, self._name(conn, quoted)).first() is not None

    def table_names(self, conn, schema):
        if not is_babelfish(conn):
            return super().table_names(conn, schema)
        return conn.execute(TABLES_IN_SCHEMA, {"s": schema}).scalars().all()

    def indexes(self, conn, table):
        """From sys.indexes (SQLAlchemy reads no unique constraints here, and Babelfish's keys not at all)."""
        by_fold = {c.name.casefold(): c.name for c in table.c}
        babelfish = is_babelfish(conn)
        found: dict[str, dict] = {}
        for r in conn.execute(INDEXES, self._name(conn, table)):
            ix = found.setdefault(r.name, {"name": r.name, "stored_as": r.name if babelfish else None, "columns": [], "unique": bool(r.is_unique),
                                           "primary": bool(r.is_primary_key),
                                           "constraint": bool(r.is_primary_key or r.is_unique_constraint),
                                           "partial": bool(r.has_filter), "descending": set()})
            column = by_fold.get(r.column_name.casefold(), r.column_name)
            ix["columns"].append(column)
            if r.is_descending_key:
                ix["descending"].add(column)
        return list(found.values())

    def index_named(self, conn, table, name):
        """Babelfish stores index `name` of `table` as the first 31 characters of both names, lower
        case, then an md5: sys.indexes shows that, never the name given."""
        if not is_babelfish(conn):
            return super().index_named(conn, table, name)
        stored = (name + table.name).lower()[:31]
        return next((ix for ix in self.indexes(conn, table)
                     if re.fullmatch(re.escape(stored) + "[0-9a-f]{32}", ix["stored_as"])), None)

    def column_spellings(self, conn, schema, table):
        if not is_babelfish(conn):
            return {}  # SQL Server's catalog keeps names as created
        names = conn.execute(COLUMN_SPELLINGS, {"s": schema, "t": table}).scalars().all()
        folded = [n.lower() for n in names]
        return {n.lower(): n for n in names if folded.count(n.lower()) == 1}

    def widen_to_text(self, conn, table, column):
        prep = conn.dialect.identifier_preparer
        kind = column.type.compile(dialect=conn.dialect)
        nullable = "NULL" if column.nullable else "NOT NULL"
        conn.execute(sa.text(f"ALTER TABLE {prep.format_table(table)} ALTER COLUMN {prep.quote(column.name)} {kind} {nullable}"))
    range_walk = False  # every batch is DELETE TOP (n) over a key window found first

    def unique_index(self, table, name, columns, nulls_equal, concurrently=False):
        """SQL Server's unique index counts NULLs as equal; NULLs counted distinct (SQL's rule) is a
        unique index filtered to rows whose key has no NULL."""
        cols = [table.c[c] for c in columns]
        if nulls_equal:
            return sa.Index(name, *cols, unique=True)
        return sa.Index(name, *cols, unique=True, mssql_where=sa.and_(*(c.is_not(None) for c in cols)))

    def set_session_timeouts(self, conn, lock_s, statement_s, local=False):
        # SQL Server has no server-side statement timeout; pymssql's query timeout is per connection
        # string, so only the lock timeout is set here.
        conn.execute(lock_timeout_statement(lock_s))

    def table_bytes(self, conn, table):
        if is_babelfish(conn):
            return None  # no sys.dm_db_partition_stats (nor sp_spaceused): the size is not known there
        name = conn.dialect.identifier_preparer.format_table(table)
        return conn.execute(
            sa.text("SELECT SUM(reserved_page_count) * 8192 FROM sys.dm_db_partition_stats WHERE object_id = OBJECT_ID(:t)"),
            {"t": name},
        ).scalar()

    def analyze(self, conn, table):
        conn.execute(sa.text(f"UPDATE STATISTICS {conn.dialect.identifier_preparer.format_table(table)}"))

    def try_phase_lock(self, conn, key):
        result = conn.execute(APPLOCK, {"k": applock_resource(conn, key)}).scalar()
        return result is not None and result >= 0  # SQL Server answers -1 when it is held, Babelfish -999

    def release_phase_lock(self, conn, key):
        conn.execute(RELEASE_APPLOCK, {"k": applock_resource(conn, key)})

    def delete_returning_rows(self, conn, stmt, table):
        return conn.execute(delete_statement(conn.dialect, table, stmt.whereclause, output_rows=True)).all()

    def delete_into_archive(self, conn, stmt, table, archive, stamp):
        """The batch numbered first (its number goes into every OUTPUT row), and taken back when
        the DELETE found nothing: only batches that archived rows are named in the batch table."""
        batch = self.open_archive_batch(conn, archive, stamp)
        rows = conn.execute(delete_statement(conn.dialect, table, stmt.whereclause, None, archive.rows,
                                             {BATCH: batch})).rowcount
        if rows == 0:
            conn.execute(sa.delete(archive.batches).where(archive.batches.c[BATCH] == batch))
        return rows

    def insertable_rows(self, table, rows):
        """pymssql sends a datetime as text to the millisecond: datetime2, datetimeoffset and time
        columns (to the 100 ns) get theirs as text to the microsecond instead, which the server parses
        exactly (a datetime column keeps pymssql's form: it refuses more than three digits)."""
        precise = [c.name for c in table.c if isinstance(c.type, (mssql_types.DATETIME2, mssql_types.DATETIMEOFFSET,
                                                                   mssql_types.TIME))]
        if not precise:
            return rows
        return [{**row, **{n: row[n].isoformat(sep=" ") if isinstance(row[n], datetime) else
                           row[n].isoformat() if isinstance(row[n], time) else row[n] for n in precise}}
                for row in rows]

    def update_saving_previous(self, conn, table, previous, keys, targets, where, stamp):
        return conn.execute(update_statement(conn.dialect, table, previous, targets, where, stamp)).rowcount

    def refuses_explicit_identity(self, table):
        """Every IDENTITY column refuses explicit values unless IDENTITY_INSERT is on, and SQLAlchemy
        turns it on by itself only for INSERT ... VALUES that name the column, not INSERT ... SELECT."""
        return any(c.identity is not None for c in table.c)

    def cannot_restore_into(self, conn, table):
        if not (self.refuses_explicit_identity(table) and " " in (table.schema or "") + table.name and is_babelfish(conn)):
            return None
        return (f"restoring into '{table.fullname}' needs SET IDENTITY_INSERT, which Babelfish refuses for a table "
                "whose name holds a space (SQL Server takes it)")

    def insert_select_overriding_identity(self, conn, table, names, source):
        """IDENTITY_INSERT on for the one INSERT ... SELECT, and off again even when it fails: the
        setting belongs to the session, which goes back to the pool."""
        # SQLAlchemy keeps the row count of an INSERT only when asked to
        insert = sa.insert(table).from_select(names, source).execution_options(preserve_rowcount=True)
        conn.execute(identity_insert_statement(conn.dialect, table, True))
        try:
            rows = conn.execute(insert).rowcount
        except BaseException:
            with contextlib.suppress(sa.exc.DBAPIError):  # the INSERT's own error is the one to report
                conn.execute(identity_insert_statement(conn.dialect, table, False))
            raise
        conn.execute(identity_insert_statement(conn.dialect, table, False))
        return rows

    # catalog ------------------------------------------------------------------------------
    def _name(self, conn, table) -> dict:
        return {"t": conn.dialect.identifier_preparer.format_table(table)}

    def inbound_foreign_keys(self, conn, table):
        return [f"foreign key {r.name} on {r.child}" for r in conn.execute(INBOUND_FOREIGN_KEYS, self._name(conn, table))]

    def dependent_views(self, conn, table):
        return [f"{r.type_desc.lower().replace('_', ' ')} {r.name}"
                for r in conn.execute(DEPENDENT_OBJECTS, self._name(conn, table)) if "VIEW" in r.type_desc]

    def dependent_routines(self, conn, table, names):
        """sys.sql_expression_dependencies tracks procedures, functions and triggers by object id."""
        found = [f"{r.type_desc.lower().replace('_', ' ')} {r.name}"
                 for r in conn.execute(DEPENDENT_OBJECTS, self._name(conn, table)) if "VIEW" not in r.type_desc]
        return found + [f"trigger {name} on {table.fullname}" for name in conn.execute(TRIGGERS_ON, self._name(conn, table)).scalars()]

    def cannot_move_tables(self, conn):
        if is_babelfish(conn):
            return "moving a table to another schema (ALTER SCHEMA ... TRANSFER) is not supported by Babelfish"
        return None

    def rename_table(self, conn, table, new_name):
        conn.execute(rename_statement(conn.dialect, table, new_name))

    def move_table(self, conn, table, schema, new_name):
        conn.execute(create_schema_statement(conn.dialect, schema))
        if new_name != table.name:
            self.rename_table(conn, table, new_name)
            table = sa.Table(new_name, sa.MetaData(), schema=table.schema)
        conn.execute(move_statement(conn.dialect, table, schema))
