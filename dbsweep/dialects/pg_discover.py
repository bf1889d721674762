"""PostgreSQL's catalog and statistics as discovery reads them: every user table with its size,
estimated rows and activity counters, its columns, keys, foreign keys and indexes, and a block
sample of a table's rows (`TABLESAMPLE SYSTEM`: whole pages, never a full scan). All reads."""

from __future__ import annotations

from contextlib import contextmanager

import sqlalchemy as sa

from .discovery import ids_found, qualified  # noqa: F401  (ids_found: this module's part of the protocol)

DEFAULT_SCHEMA = "public"  # where a policy's unqualified table name points
SKIPPED_SCHEMAS = ("pg_catalog", "information_schema", "dbsweep", "dbsweep_archive")


@contextmanager
def read_only(conn: sa.Connection, statement_timeout_s: float, lock_timeout_s: float):
    """The caller's transaction becomes read-only, under the timeouts: discovery can change nothing.
    The settings are the transaction's own (SET LOCAL): its rollback ends them."""
    conn.execute(sa.text("SET TRANSACTION READ ONLY"))
    conn.execute(sa.text(f"SET LOCAL statement_timeout = '{int(statement_timeout_s * 1000)}ms'"))
    conn.execute(sa.text(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'"))
    yield


def stats_reset(conn: sa.Connection):
    return conn.execute(sa.text("SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()")).scalar()


def tables(conn: sa.Connection) -> list[dict]:
    return [dict(r._mapping) for r in conn.execute(sa.text("""
        SELECT c.oid, n.nspname AS schema, c.relname AS name, c.reltuples::bigint AS est_rows, c.relpages AS pages,
               pg_total_relation_size(c.oid) AS bytes, coalesce(s.seq_scan, 0) + coalesce(s.idx_scan, 0) AS reads,
               coalesce(s.n_tup_ins, 0) + coalesce(s.n_tup_upd, 0) + coalesce(s.n_tup_del, 0) AS writes,
               coalesce(s.n_live_tup, 0) AS live, coalesce(s.n_dead_tup, 0) AS dead,
               greatest(s.last_vacuum, s.last_autovacuum) AS vacuumed
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT IN :skipped
          AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
        ORDER BY n.nspname, c.relname""").bindparams(sa.bindparam("skipped", expanding=True)),
        {"skipped": list(SKIPPED_SCHEMAS)})]


def columns(conn: sa.Connection, oids: list[int]) -> list[dict]:
    return [dict(r._mapping) for r in conn.execute(sa.text("""
        SELECT attrelid AS oid, attname AS name, format_type(atttypid, atttypmod) AS type, attnotnull AS not_null
        FROM pg_attribute WHERE attrelid = ANY(:oids) AND attnum > 0 AND NOT attisdropped ORDER BY attrelid, attnum"""),
        {"oids": oids})]


def constraints(conn: sa.Connection, oids: list[int]) -> list[dict]:
    """Primary keys, unique constraints and foreign keys, with their columns by name."""
    return [dict(r._mapping) for r in conn.execute(sa.text("""
        SELECT con.conname AS name, con.contype AS kind, con.conrelid AS oid, con.confrelid AS refers_to,
               ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                     JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i) AS cols,
               ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                     JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i) AS ref_cols
        FROM pg_constraint con WHERE con.contype IN ('p', 'u', 'f') AND (con.conrelid = ANY(:oids)
              OR con.confrelid = ANY(:oids))"""), {"oids": oids})]


def indexes(conn: sa.Connection, oids: list[int]) -> list[dict]:
    return [dict(r._mapping) for r in conn.execute(sa.text("""
        SELECT i.indrelid AS oid, c.relname AS name, i.indisunique AS is_unique, i.indisprimary AS is_primary,
               i.indpred IS NOT NULL AS partial, pg_relation_size(i.indexrelid) AS bytes,
               coalesce(s.idx_scan, 0) AS scans,
               ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(n, o)
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o) AS cols
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = i.indexrelid
        WHERE i.indrelid = ANY(:oids)"""), {"oids": oids})]


def sample(conn: sa.Connection, schema: str, name: str, cols: list[str], percent: float | None,
           key: list[str]) -> list[tuple]:
    """The rows' values of `cols`: every row (percent None), or a block sample of about `percent`
    of the pages, the same pages each time (REPEATABLE)."""
    prep = conn.dialect.identifier_preparer
    picked = ", ".join(prep.quote(c) for c in cols)
    sampled = "" if percent is None else f" TABLESAMPLE SYSTEM ({float(percent):.6f}) REPEATABLE (42)"
    return [tuple(r) for r in conn.execute(sa.text(f"SELECT {picked} FROM {qualified(conn, schema, name)}{sampled}"))]


def exact_rows(conn: sa.Connection, schema: str, name: str) -> int:
    return conn.execute(sa.text(f"SELECT count(*) FROM {qualified(conn, schema, name)}")).scalar()
