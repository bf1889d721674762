"""PostgreSQL: per-transaction timeouts, advisory locks, and batches addressed by ctid."""

from __future__ import annotations

import sqlalchemy as sa

from ..archive import ARCHIVED_AT, BATCH_NO, RUN_ID
from ..keys import after_key, up_to_key
from .base import NO_ARCHIVE, BatchOutcome, Dialect

ROW_LOCATOR = sa.literal_column("ctid")


class PostgresDialect(Dialect):
    name = "postgresql"
    supports_row_locator = True
    dml_in_cte = True

    def set_session_timeouts(self, conn, lock_s, statement_s):
        conn.execute(
            sa.text("SELECT set_config('lock_timeout', :l, false), set_config('statement_timeout', :s, false)"),
            {"l": f"{int(lock_s * 1000)}ms", "s": f"{int(statement_s * 1000)}ms"},
        )

    def table_bytes(self, conn, table):
        return conn.execute(sa.select(sa.func.pg_total_relation_size(sa.func.to_regclass(self._regname(conn, table))))).scalar()

    def table_blocks(self, conn, table) -> int:
        regclass = sa.func.to_regclass(self._regname(conn, table))
        size = conn.execute(sa.select(sa.func.pg_relation_size(regclass))).scalar() or 0
        block = int(conn.execute(sa.text("SELECT current_setting('block_size')")).scalar())
        return -(-size // block)

    def analyze(self, conn, table):
        conn.execute(sa.text(f"ANALYZE {self._regname(conn, table)}"))

    def vacuum(self, conn, table):
        with conn.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as auto:
            auto.execute(sa.text(f"VACUUM (ANALYZE) {self._regname(conn, table)}"))

    def try_phase_lock(self, conn, key):
        return bool(conn.execute(sa.select(sa.func.pg_try_advisory_lock(sa.func.hashtextextended(key, 0)))).scalar())

    def release_phase_lock(self, conn, key):
        conn.execute(sa.select(sa.func.pg_advisory_unlock(sa.func.hashtextextended(key, 0))))

    def _regname(self, conn, table: sa.Table) -> str:
        prep = conn.dialect.identifier_preparer
        return prep.format_table(table)

    def delete_into_archive(self, conn, stmt, table, archive, stamp):
        """One statement: WITH gone AS (DELETE ... RETURNING *), kept AS (INSERT INTO archive
        SELECT ... FROM gone RETURNING 1) SELECT count(*) FROM kept."""
        gone = stmt.returning(*table.c).cte("gone")
        copied = sa.select(
            *[gone.c[name] for name in table.c.keys()],
            sa.literal(stamp[RUN_ID], sa.String), sa.literal(stamp[BATCH_NO], sa.Integer), sa.func.now(),
        )
        kept = (sa.insert(archive).from_select([*table.c.keys(), RUN_ID, BATCH_NO, ARCHIVED_AT], copied)
                .returning(sa.literal_column("1")).cte("kept"))
        return conn.execute(sa.select(sa.func.count()).select_from(kept).add_cte(gone)).scalar()

    def delete_batch(self, conn, table, keys, selection, after, last, size, sink=NO_ARCHIVE):
        """One statement: pick the next `size` selected rows in key order, delete them by ctid
        (a TID scan, whatever plan the batch query gets) and return the count and the last key.
        An archived batch takes the portable two-statement path, whose DELETE the archive wraps."""
        if sink.mode != "none":
            return super().delete_batch(conn, table, keys, selection, after, last, size, sink)
        window = [selection, up_to_key(keys, last)]
        if after is not None:
            window.append(after_key(keys, after))
        batch = (
            sa.select(ROW_LOCATOR.label("row_locator"), *keys).where(*window).order_by(*keys).limit(size).cte("batch")
        )
        locators = sa.func.array(sa.select(batch.c.row_locator).scalar_subquery())
        gone = (
            sa.delete(table).where(ROW_LOCATOR == sa.any_(locators), selection)
            .returning(sa.literal_column("1").label("one")).cte("gone")
        )
        batch_keys = [batch.c[k.name] for k in keys]
        last_row = sa.select(*batch_keys).order_by(*[k.desc() for k in batch_keys]).limit(1).subquery("last_row")
        stmt = sa.select(
            sa.select(sa.func.count()).select_from(gone).scalar_subquery().label("n_deleted"),
            sa.select(sa.func.count()).select_from(batch).scalar_subquery().label("n_seen"),
            *last_row.c,
        )
        row = conn.execute(stmt).first()
        if row is None:
            return BatchOutcome(rows=0, last_key=None)
        finished = row.n_seen < size
        return BatchOutcome(rows=row.n_deleted, last_key=None if finished else list(row[2:]))

    def delete_block_range(self, conn, table, selection, first_block: int, end_block: int, sink=NO_ARCHIVE) -> int:
        """Tables without a key: delete the selected rows in heap blocks [first, end) (TID range scan)."""
        lo = sa.literal_column(f"'({int(first_block)},0)'::tid")
        hi = sa.literal_column(f"'({int(end_block)},0)'::tid")
        return sink.delete(conn, sa.delete(table).where(ROW_LOCATOR >= lo, ROW_LOCATOR < hi, selection), table)
