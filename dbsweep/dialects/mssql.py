"""SQL Server (pymssql). No server runs here: these statements are compile-tested only."""

from __future__ import annotations

import sqlalchemy as sa

from .base import Dialect


class MssqlDialect(Dialect):
    name = "mssql"

    def set_session_timeouts(self, conn, lock_s, statement_s):
        # SQL Server has no server-side statement timeout; the driver's query timeout would be per
        # connection string, so only the lock timeout is set here.
        conn.execute(sa.text(f"SET LOCK_TIMEOUT {int(lock_s * 1000)}"))

    def table_bytes(self, conn, table):
        name = conn.dialect.identifier_preparer.format_table(table)
        return conn.execute(
            sa.text("SELECT SUM(reserved_page_count) * 8192 FROM sys.dm_db_partition_stats WHERE object_id = OBJECT_ID(:t)"),
            {"t": name},
        ).scalar()

    def analyze(self, conn, table):
        conn.execute(sa.text(f"UPDATE STATISTICS {conn.dialect.identifier_preparer.format_table(table)}"))

    def try_phase_lock(self, conn, key):
        result = conn.execute(
            sa.text("DECLARE @r int; EXEC @r = sp_getapplock @Resource = :k, @LockMode = 'Exclusive', "
                    "@LockOwner = 'Session', @LockTimeout = 0; SELECT @r"),
            {"k": key},
        ).scalar()
        return result is not None and result >= 0

    def release_phase_lock(self, conn, key):
        conn.execute(sa.text("EXEC sp_releaseapplock @Resource = :k, @LockOwner = 'Session'"), {"k": key})
