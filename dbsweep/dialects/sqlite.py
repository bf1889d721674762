"""SQLite, for local work and portability tests: no schemas, no server-side timeouts."""

from __future__ import annotations

import sqlalchemy as sa

from .base import Dialect


class SqliteDialect(Dialect):
    name = "sqlite"

    def widen_to_text(self, conn, table, column):
        """SQLite never enforces a string's length: nothing to widen."""
    ledger_schema = None

    def ensure_schema(self, conn, schema):
        pass

    def analyze(self, conn, table):
        conn.execute(sa.text(f"ANALYZE {conn.dialect.identifier_preparer.format_table(table)}"))

    def row_key(self) -> sa.ColumnElement:
        return sa.column("rowid", sa.Integer)
