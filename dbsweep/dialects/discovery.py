"""What `dbsweep discover` reads of a database, one module per database (pg_discover,
mssql_discover). Every call only reads; the rows come back in one shape for every server."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

import sqlalchemy as sa


class DiscoveryCatalog(Protocol):
    DEFAULT_SCHEMA: str  # where an unqualified table name points

    def read_only(self, conn: sa.Connection, statement_timeout_s: float,
                  lock_timeout_s: float) -> AbstractContextManager[None]:
        """Inside it, the connection can change nothing and waits no longer than the timeouts."""

    def stats_reset(self, conn: sa.Connection) -> datetime | None:
        """Since when the read and write counters count, None when unknown."""

    def tables(self, conn: sa.Connection) -> list[dict]:
        """oid, schema, name, est_rows, pages, bytes, reads, writes, live, dead, vacuumed (None: not known here)."""

    def columns(self, conn: sa.Connection, oids: list[int]) -> list[dict]:
        """oid, name, type (PostgreSQL's type names), not_null."""

    def constraints(self, conn: sa.Connection, oids: list[int]) -> list[dict]:
        """Primary keys (kind p), unique constraints (u), foreign keys (f): name, oid, refers_to, cols, ref_cols."""

    def indexes(self, conn: sa.Connection, oids: list[int]) -> list[dict]:
        """oid, name, is_unique, is_primary, partial, bytes, scans, cols."""

    def sample(self, conn: sa.Connection, schema: str, name: str, cols: list[str],
               percent: float | None, key: list[str]) -> list[tuple]:
        """Every row's `cols` (percent None), or those of a repeatable sample of about `percent`
        of the table, or NotSampled when the server cannot sample it cheaply."""

    def exact_rows(self, conn: sa.Connection, schema: str, name: str) -> int: ...

    def ids_found(self, conn: sa.Connection, schema: str, name: str, key: str, ids: list,
                  type_column: str | None, type_value) -> int:
        """How many of `ids` are keys of the table (of its rows of that type, with a type column)."""


class NotSampled(Exception):
    """A large table this server cannot sample cheaply: discovery reads none of its rows."""


def qualified(conn: sa.Connection, schema: str, name: str) -> str:
    prep = conn.dialect.identifier_preparer
    return f"{prep.quote(schema)}.{prep.quote(name)}"


def ids_found(conn: sa.Connection, schema: str, name: str, key: str, ids: list, type_column: str | None,
              type_value) -> int:
    """How many of `ids` are keys of the table (of its rows of that type, when it has the type
    column): the same SQL on every server."""
    prep = conn.dialect.identifier_preparer
    same_type = f" AND {prep.quote(type_column)} = :t" if type_column else ""
    stmt = sa.text(f"SELECT COUNT(*) FROM {qualified(conn, schema, name)} WHERE {prep.quote(key)} IN :ids{same_type}")
    return conn.execute(stmt.bindparams(sa.bindparam("ids", expanding=True)),
                        {"ids": list(dict.fromkeys(ids)), "t": type_value}).scalar()
