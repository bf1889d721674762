"""SQL Server's catalog and statistics as discovery reads them, in the shape pg_discover gives:
sys.tables, sys.columns, sys.key_constraints, sys.foreign_keys, sys.indexes and sys.partitions'
row counts; sizes from sys.dm_db_partition_stats and read/write counters from
sys.dm_db_index_usage_stats (reset when the server starts) where the server has them. Babelfish
has neither view: there a table's size and reads are unknown (None), never taken as zero.
Samples are `TABLESAMPLE (p PERCENT)`, whole pages as in SQL Server. All reads."""

from __future__ import annotations

import math
import re
from contextlib import contextmanager

import sqlalchemy as sa

from .discovery import NotSampled, ids_found, qualified  # noqa: F401  (ids_found: this module's part of the protocol)
from .mssql import is_babelfish, lock_timeout_statement

DEFAULT_SCHEMA = "dbo"  # where a policy's unqualified table name points
SKIPPED_SCHEMAS = ("sys", "INFORMATION_SCHEMA", "dbsweep", "dbsweep_archive")
# discovery judges types by PostgreSQL's names: the time types and the integer ones
TYPE_NAMES = {"datetime": "timestamp", "datetime2": "timestamp", "smalldatetime": "timestamp",
              "datetimeoffset": "timestamp with time zone", "date": "date", "int": "integer", "bigint": "bigint",
              "smallint": "smallint", "tinyint": "smallint"}


@contextmanager
def read_only(conn: sa.Connection, statement_timeout_s: float, lock_timeout_s: float):
    """SQL Server has no read-only transaction: discovery sends SELECTs only, in a transaction the
    caller rolls back, under a lock timeout and pymssql's query timeout (the statement timeout),
    both put back when it ends."""
    driver = conn.connection.dbapi_connection._conn  # pymssql's connection: the query timeout is its own
    before = driver.query_timeout
    driver.query_timeout = max(1, int(statement_timeout_s))
    conn.execute(lock_timeout_statement(lock_timeout_s))
    try:
        yield
    finally:
        driver.query_timeout = before
        conn.execute(sa.text("SET LOCK_TIMEOUT -1"))


def stats_reset(conn: sa.Connection):
    """When the usage counters began: they are reset at every server start."""
    if is_babelfish(conn):
        return None
    return conn.execute(sa.text("SELECT sqlserver_start_time FROM sys.dm_os_sys_info")).scalar()


def counters_known(conn: sa.Connection) -> bool:
    return not is_babelfish(conn)


TABLES = """
    SELECT t.object_id AS oid, s.name AS [schema], t.name AS name,
           COALESCE((SELECT SUM(p.rows) FROM sys.partitions p
                     WHERE p.object_id = t.object_id AND p.index_id IN (0, 1)), -1) AS est_rows,
           {pages} AS pages, {bytes} AS bytes, {reads} AS reads, {writes} AS writes
    FROM sys.tables t JOIN sys.schemas s ON s.schema_id = t.schema_id
    WHERE t.is_ms_shipped = 0 AND s.name NOT IN :skipped
    ORDER BY s.name, t.name"""
SIZES = {"pages": "(SELECT COALESCE(SUM(ps.used_page_count), 0) FROM sys.dm_db_partition_stats ps "
                  "WHERE ps.object_id = t.object_id AND ps.index_id IN (0, 1))",
         "bytes": "(SELECT COALESCE(SUM(ps.reserved_page_count), 0) * 8192 FROM sys.dm_db_partition_stats ps "
                  "WHERE ps.object_id = t.object_id)",
         "reads": "(SELECT COALESCE(SUM(u.user_seeks + u.user_scans + u.user_lookups), 0) FROM "
                  "sys.dm_db_index_usage_stats u WHERE u.database_id = DB_ID() AND u.object_id = t.object_id)",
         "writes": "(SELECT COALESCE(SUM(u.user_updates), 0) FROM sys.dm_db_index_usage_stats u "
                   "WHERE u.database_id = DB_ID() AND u.object_id = t.object_id)"}


def tables_statement(known: bool) -> sa.TextClause:
    """Sizes and usage counters where the server keeps them (`known`), NULL elsewhere."""
    parts = {k: v if known else "NULL" for k, v in SIZES.items()}
    return sa.text(TABLES.format(**parts)).bindparams(sa.bindparam("skipped", expanding=True))


def tables(conn: sa.Connection) -> list[dict]:
    stmt = tables_statement(counters_known(conn))
    found = []
    for r in conn.execute(stmt, {"skipped": list(SKIPPED_SCHEMAS)}):
        row = dict(r._mapping)
        est = int(row["est_rows"])
        # no dead-tuple counter: SQL Server cleans its ghost records itself
        found.append({**row, "est_rows": est, "live": max(est, 0), "dead": 0, "vacuumed": None})
    return found


def columns(conn: sa.Connection, oids: list[int]) -> list[dict]:
    rows = conn.execute(sa.text("""
        SELECT c.object_id AS oid, c.name, TYPE_NAME(c.system_type_id) AS type, c.is_nullable
        FROM sys.columns c WHERE c.object_id IN :oids ORDER BY c.object_id, c.column_id""")
                        .bindparams(sa.bindparam("oids", expanding=True)), {"oids": oids or [0]})
    return [{"oid": r.oid, "name": r.name, "type": TYPE_NAMES.get((r.type or "").lower(), (r.type or "").lower()),
             "not_null": not r.is_nullable} for r in rows]


def constraints(conn: sa.Connection, oids: list[int]) -> list[dict]:
    """Primary keys and unique constraints (their columns from sys.indexes: Babelfish's
    sys.key_constraints do not name their index) and foreign keys."""
    oids = oids or [0]
    keys: dict[tuple, dict] = {}
    for r in conn.execute(sa.text("""
            SELECT i.object_id AS oid, i.name, i.is_primary_key, c.name AS col
            FROM sys.indexes i
            JOIN sys.index_columns ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id AND ic.is_included_column = 0
            JOIN sys.columns c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
            WHERE (i.is_primary_key = 1 OR i.is_unique_constraint = 1) AND i.object_id IN :oids
            ORDER BY i.object_id, i.index_id, ic.key_ordinal""").bindparams(sa.bindparam("oids", expanding=True)),
            {"oids": oids}):
        con = keys.setdefault((r.oid, r.name), {"name": r.name, "kind": "p" if r.is_primary_key else "u", "oid": r.oid,
                                                "refers_to": 0, "cols": [], "ref_cols": []})
        con["cols"].append(r.col)
    for r in conn.execute(sa.text("""
            SELECT fk.name, fk.parent_object_id AS oid, fk.referenced_object_id AS refers_to,
                   pc.name AS col, rc.name AS ref_col
            FROM sys.foreign_keys fk
            JOIN sys.foreign_key_columns fkc ON fkc.constraint_object_id = fk.object_id
            JOIN sys.columns pc ON pc.object_id = fkc.parent_object_id AND pc.column_id = fkc.parent_column_id
            JOIN sys.columns rc ON rc.object_id = fkc.referenced_object_id AND rc.column_id = fkc.referenced_column_id
            WHERE fk.parent_object_id IN :oids OR fk.referenced_object_id IN :oids
            ORDER BY fk.object_id, fkc.constraint_column_id""").bindparams(sa.bindparam("oids", expanding=True)),
            {"oids": oids}):
        con = keys.setdefault((r.oid, r.name), {"name": r.name, "kind": "f", "oid": r.oid, "refers_to": r.refers_to,
                                                "cols": [], "ref_cols": []})
        con["cols"].append(r.col)
        con["ref_cols"].append(r.ref_col)
    return list(keys.values())


def indexes_statement(known: bool) -> sa.TextClause:
    size = ("(SELECT COALESCE(SUM(ps.used_page_count), 0) * 8192 FROM sys.dm_db_partition_stats ps "
            "WHERE ps.object_id = i.object_id AND ps.index_id = i.index_id)") if known else "NULL"
    scans = ("(SELECT COALESCE(SUM(u.user_seeks + u.user_scans + u.user_lookups), 0) FROM sys.dm_db_index_usage_stats u "
             "WHERE u.database_id = DB_ID() AND u.object_id = i.object_id AND u.index_id = i.index_id)") if known else "NULL"
    return sa.text(f"""
            SELECT i.object_id AS oid, OBJECT_NAME(i.object_id) AS table_name, i.name, i.is_unique, i.is_primary_key, i.has_filter, {size} AS bytes,
                   {scans} AS scans, c.name AS col
            FROM sys.indexes i
            JOIN sys.index_columns ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id AND ic.is_included_column = 0
            JOIN sys.columns c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
            WHERE i.object_id IN :oids AND i.name IS NOT NULL
            ORDER BY i.object_id, i.index_id, ic.key_ordinal""").bindparams(sa.bindparam("oids", expanding=True))


def indexes(conn: sa.Connection, oids: list[int]) -> list[dict]:
    found: dict[tuple, dict] = {}
    babelfish = is_babelfish(conn)
    for r in conn.execute(indexes_statement(counters_known(conn)), {"oids": oids or [0]}):
        name = _given_name(r.name, r.table_name) if babelfish else r.name
        ix = found.setdefault((r.oid, r.name), {"oid": r.oid, "name": name, "is_unique": bool(r.is_unique),
                                                "is_primary": bool(r.is_primary_key), "partial": bool(r.has_filter),
                                                "bytes": r.bytes, "scans": r.scans, "cols": []})
        ix["cols"].append(r.col)
    return list(found.values())


def _given_name(stored: str, table: str) -> str:
    """The index name Babelfish was given, as far as it keeps it: it stores the first 31
    characters of index name + table name, lower case, then an md5."""
    match = re.fullmatch(r"(.*)[0-9a-f]{32}", stored)
    if not match:
        return stored
    kept = match.group(1)
    return next(kept[:k] for k in range(len(kept) + 1) if kept[k:] == table.lower()[:len(kept) - k])


WINDOWS = 30


def sample_statement(sql_dialect, schema: str, name: str, cols: list[str], percent: float) -> sa.TextClause:
    """SQL Server's page sample: about `percent` of the pages, the same ones each time."""
    prep = sql_dialect.identifier_preparer
    picked = ", ".join(prep.quote(c) for c in cols)
    return sa.text(f"SELECT {picked} FROM {prep.quote(schema)}.{prep.quote(name)} "
                   f"TABLESAMPLE ({float(percent):.6f} PERCENT) REPEATABLE (42)")


def sample(conn: sa.Connection, schema: str, name: str, cols: list[str], percent: float | None,
           key: list[str]) -> list[tuple]:
    """The rows' values of `cols`: every row (percent None), or the rows of about `percent` of the
    pages, the same pages each time (REPEATABLE). Babelfish accepts TABLESAMPLE but reads every
    row: there the sample is WINDOWS runs of consecutive keys spread evenly over an integer key's
    range, each an index seek."""
    prep = conn.dialect.identifier_preparer
    picked = ", ".join(prep.quote(c) for c in cols)
    table = qualified(conn, schema, name)
    if percent is None:
        return [tuple(r) for r in conn.execute(sa.text(f"SELECT {picked} FROM {table}"))]
    if not is_babelfish(conn):
        return [tuple(r) for r in conn.execute(sample_statement(conn.dialect, schema, name, cols, percent))]
    if len(key) != 1:
        raise NotSampled("Babelfish samples along a single-column integer key, and this table has none")
    column = prep.quote(key[0])
    low, high = conn.execute(sa.text(f"SELECT MIN({column}), MAX({column}) FROM {table}")).one()
    if not isinstance(low, int) or not isinstance(high, int):
        raise NotSampled("Babelfish samples along a single-column integer key, and this table has none")
    span = high - low + 1
    per_window = max(1, math.ceil(percent / 100 * span / WINDOWS))
    window = sa.text(f"SELECT TOP ({per_window}) {picked} FROM {table} WHERE {column} >= :start ORDER BY {column}")
    found = []
    for i in range(WINDOWS):
        found += [tuple(r) for r in conn.execute(window, {"start": low + span * i // WINDOWS})]
    return found


def exact_rows(conn: sa.Connection, schema: str, name: str) -> int:
    return conn.execute(sa.text(f"SELECT COUNT_BIG(*) FROM {qualified(conn, schema, name)}")).scalar()
