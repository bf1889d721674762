"""PostgreSQL: per-transaction timeouts, advisory locks, and batches addressed by ctid."""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..changes import ARCHIVED_AT, BATCH, BATCH_NO, RUN_ID, ArchiveTables
from ..keys import after_key, up_to_key
from ..redact import redact
from .base import NO_ARCHIVE, BatchOutcome, Dialect, saved_columns

ROW_LOCATOR = sa.literal_column("ctid")


class Tid(sa.types.UserDefinedType):
    cache_ok = True

    def get_col_spec(self, **kw):
        return "tid"


class PostgresDialect(Dialect):
    name = "postgresql"
    supports_row_locator = True
    dml_in_cte = True

    def set_session_timeouts(self, conn, lock_s, statement_s, local=False):
        conn.execute(
            sa.text("SELECT set_config('lock_timeout', :l, :local), set_config('statement_timeout', :s, :local)"),
            {"l": f"{int(lock_s * 1000)}ms", "s": f"{int(statement_s * 1000)}ms", "local": local},
        )

    def table_bytes(self, conn, table):
        """Heap, indexes and TOAST; for a partitioned table, of all its leaf partitions."""
        return conn.execute(sa.text("""
            SELECT (CASE WHEN c.relkind = 'p'
                         THEN (SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree(c.oid)
                               WHERE isleaf)
                         ELSE pg_total_relation_size(c.oid) END)::bigint
            FROM pg_class c WHERE c.oid = to_regclass(:t)"""), {"t": self._regname(conn, table)}).scalar()

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

    def replica_lag_seconds(self, conn):
        # replay_lag is NULL for a replica that has caught up and seen no new WAL since
        value = conn.execute(sa.text(
            "SELECT max(extract(epoch FROM coalesce(replay_lag, interval '0'))) FROM pg_stat_replication")).scalar()
        return None if value is None else float(value)

    # health ---------------------------------------------------------------------------------
    def server_version(self, conn):
        return conn.execute(sa.text("SELECT version()")).scalar()

    def connection_usage(self, conn):
        row = conn.execute(sa.text("SELECT count(*) FILTER (WHERE backend_type = 'client backend'), "
                                   "current_setting('max_connections')::int FROM pg_stat_activity")).one()
        return int(row[0]), int(row[1])

    def table_stats(self, conn, table):
        """The table's own statistics; for a partitioned table (the parent keeps none), its leaf
        partitions' summed. pg_partition_tree() lists nothing for a table that is not partitioned."""
        row = conn.execute(sa.text("""
            WITH leaves AS (
                SELECT relid FROM pg_partition_tree(to_regclass(:t)) WHERE isleaf
                UNION
                SELECT oid FROM pg_class WHERE oid = to_regclass(:t) AND relkind <> 'p')
            SELECT sum(s.n_live_tup), sum(s.n_dead_tup), sum(pg_total_relation_size(s.relid)),
                   max(greatest(s.last_vacuum, s.last_autovacuum)), count(*)
            FROM leaves JOIN pg_stat_user_tables s ON s.relid = leaves.relid"""), {"t": self._regname(conn, table)}).one()
        return None if not row[4] else (int(row[0]), int(row[1]), int(row[2]), row[3])

    def sessions(self, conn, longer_than_s):
        rows = conn.execute(sa.text(r"""
            SELECT pid, state, array_to_string(pg_blocking_pids(pid), ', ') AS blocked_by,
                   extract(epoch FROM now() - CASE WHEN state = 'idle in transaction' THEN state_change
                                                   ELSE query_start END) AS for_s,
                   left(regexp_replace(query, '\s+', ' ', 'g'), 80) AS query
            FROM pg_stat_activity
            WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND datname = current_database()
              AND (cardinality(pg_blocking_pids(pid)) > 0
                   OR (state = 'active' AND now() - query_start > make_interval(secs => :s))
                   OR (state = 'idle in transaction' AND now() - state_change > make_interval(secs => :s)))
            ORDER BY for_s DESC"""), {"s": longer_than_s}).all()
        return [{"pid": r.pid, "state": r.state, "blocked_by": r.blocked_by, "for": float(r.for_s or 0),
                 "query": redact(r.query or "")} for r in rows]

    def largest_indexes(self, conn, tables, limit):
        if not tables:
            return []
        rows = conn.execute(sa.text("""
            SELECT i.indexrelid::regclass::text, i.indrelid::regclass::text, pg_relation_size(i.indexrelid)
            FROM pg_index i
            WHERE i.indrelid IN (SELECT to_regclass(name) FROM unnest(CAST(:names AS text[])) AS name)
            ORDER BY 3 DESC, 1 LIMIT :n"""), {"names": [self._regname(conn, t) for t in tables], "n": limit}).all()
        return [(r[0], r[1], int(r[2])) for r in rows]

    def try_phase_lock(self, conn, key):
        return bool(conn.execute(sa.select(sa.func.pg_try_advisory_lock(sa.func.hashtextextended(key, 0)))).scalar())

    def release_phase_lock(self, conn, key):
        conn.execute(sa.select(sa.func.pg_advisory_unlock(sa.func.hashtextextended(key, 0))))

    def _regname(self, conn, table: sa.Table) -> str:
        prep = conn.dialect.identifier_preparer
        return prep.format_table(table)

    def delete_into_archive(self, conn, stmt, table, archive, stamp):
        """One statement: WITH gone AS (DELETE ... RETURNING *), opened AS (INSERT INTO batches
        SELECT run, batch WHERE EXISTS (SELECT 1 FROM gone) RETURNING number) INSERT INTO archive
        SELECT gone.*, (SELECT number FROM opened) FROM gone; counted by the INSERT's own row count
        (a RETURNING to count would cost a quarter more)."""
        gone, opened, archiving = _archived_delete(stmt, table, archive, stamp, "")
        # SQLAlchemy 2.1 keeps an INSERT's row count only when asked to
        return conn.execute(archiving.add_cte(gone).add_cte(opened).execution_options(preserve_rowcount=True)).rowcount

    def delete_some_each(self, conn, parts) -> list[int]:
        """delete_some on several tables in one statement, one round trip: `parts` are (table,
        where, limit, sink), each deleting at most `limit` rows (its sink's archive written in the
        same statement); the counts come back in order."""
        ctes, counted = [], []
        for i, (table, where, limit, sink) in enumerate(parts):
            parts_ctes, counting = sink.delete_cte(self, _delete_some_statement(table, where, limit), table, f"_{i}")
            ctes += parts_ctes
            counted.append(counting)
        query = sa.select(*[sa.select(sa.func.count()).select_from(c).scalar_subquery() for c in counted])
        for cte in ctes:
            query = query.add_cte(cte)
        return list(conn.execute(query).one())

    @staticmethod
    def counted_delete_cte(stmt: sa.Delete, suffix: str):
        """The CTE `gone` (DELETE ... RETURNING 1): counted by the statement that holds it."""
        return stmt.returning(sa.literal_column("1").label("one")).cte(f"gone{suffix}")

    @staticmethod
    def archived_delete_cte(stmt: sa.Delete, table: sa.Table, archive: ArchiveTables, stamp: dict, suffix: str):
        """The CTEs of delete_into_archive, the archive's INSERT one of them too, RETURNING 1 to be
        counted by the statement that holds them: (the three, the INSERT's)."""
        gone, opened, archiving = _archived_delete(stmt, table, archive, stamp, suffix)
        kept = archiving.returning(sa.literal_column("1")).cte(f"kept{suffix}")
        return [gone, opened, kept], kept

    def update_saving_previous(self, conn, table, previous, keys, targets, where, stamp):
        """One statement, the rows locked once: WITH old AS (SELECT ... FOR UPDATE), saved AS
        (INSERT INTO previous SELECT ... FROM old) UPDATE table ... FROM old."""
        names = saved_columns(previous)
        old = sa.select(*[table.c[n] for n in names]).where(where).with_for_update().cte("old")
        saved = sa.insert(previous).from_select(
            [*names, RUN_ID, BATCH_NO, ARCHIVED_AT],
            sa.select(*[old.c[n] for n in names], sa.literal(stamp[RUN_ID], sa.String),
                      sa.literal(stamp[BATCH_NO], sa.Integer), sa.func.now()),
        ).cte("saved")
        update = (sa.update(table).where(*[table.c[k.name] == old.c[k.name] for k in keys]).values(targets)
                  .returning(sa.literal_column("1")).add_cte(old).add_cte(saved))
        return len(conn.execute(update).all())

    def in_values(self, column, values):
        """column = ANY(:array): one parameter whatever the count, so the statement's text stays the
        same from batch to batch and psycopg prepares it once (no planning per batch)."""
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))

    def in_shared_values(self, key, values):
        """One named array parameter for every use in the statement: a cascade's six child deletes
        in one statement sent 2,000 keys six times (a third of the batch's time at that size)."""
        keys = sa.bindparam("dbsweep_keys", list(values), type_=postgresql.ARRAY(key.type))
        return lambda pointer: pointer == sa.any_(keys)

    def delete_returning_csv(self, conn, stmt, table, piece_bytes: int):
        """COPY (DELETE … RETURNING *) TO STDOUT as CSV, in the caller's transaction, timestamps in
        UTC: yields the rows as they arrive, in pieces of about `piece_bytes` holding whole rows
        (the server sends one row per message)."""
        compiled = stmt.returning(*table.c).compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
        piece = bytearray()
        with conn.connection.driver_connection.cursor() as cursor:
            with cursor.copy(f"COPY ({compiled.string}) TO STDOUT (FORMAT csv)", compiled.params) as copy:
                for row in copy:
                    piece += row
                    if len(piece) >= piece_bytes:
                        yield bytes(piece)
                        piece.clear()
        if piece:
            yield bytes(piece)

    def insert_select_overriding_identity(self, conn, table, names, source):
        compiled = source.compile(dialect=conn.dialect)
        statement = f"{_insert_overriding(conn, table, names)} {compiled.string} RETURNING 1"
        return len(conn.exec_driver_sql(statement, compiled.params).all())

    def insert_text_rows(self, conn, table, columns: dict[str, list]) -> int:
        """Put rows back from their text form, one array of text per column, in one statement:
        each value goes through its column type's own input function (CAST), so what COPY printed
        comes back exactly. Rows whose key (or any unique value) is taken again are skipped;
        returns how many went in. Generated columns are left to compute themselves."""
        types = dict(conn.execute(sa.text("""
            SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
            WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped AND attgenerated = ''"""),
            {"t": self._regname(conn, table)}).all())
        names = [n for n in columns if n in types]
        if not names or not columns[names[0]]:
            return 0
        params = {f"c{i}": columns[n] for i, n in enumerate(names)}
        aliases = ", ".join(f"c{i}" for i in range(len(names)))
        typed = ", ".join(f"CAST(u.c{i} AS {types[n]})" for i, n in enumerate(names))
        arrays = ", ".join(f"CAST(:c{i} AS text[])" for i in range(len(names)))
        statement = (f"{_insert_overriding(conn, table, names)} SELECT {typed} FROM unnest({arrays}) AS u({aliases}) "
                     "ON CONFLICT DO NOTHING RETURNING 1")
        return len(conn.execute(sa.text(statement), params).all())

    def delete_some(self, conn, table, where, limit, sink=NO_ARCHIVE):
        """By ctid: a TID scan, with or without a primary key. The row versions the subquery saw are
        deleted; one updated meanwhile has a new ctid and is left for the next call."""
        return sink.apply(conn, _delete_some_statement(table, where, limit), table)

    def delete_batch(self, conn, table, keys, selection, after, last, size, sink=NO_ARCHIVE):
        """One statement: pick the next `size` selected rows in key order, delete them by ctid
        (a TID scan, whatever plan the batch query gets), archive them when the sink writes to a
        table, and return the count and the last key. A sink that cannot be one statement's CTEs
        (Parquet) takes the portable two-statement path, whose DELETE it wraps."""
        if not sink.one_statement:
            return super().delete_batch(conn, table, keys, selection, after, last, size, sink)
        window = [selection, up_to_key(keys, last)]
        if after is not None:
            window.append(after_key(keys, after))
        batch = (
            sa.select(ROW_LOCATOR.label("row_locator"), *keys).where(*window).order_by(*keys).limit(size).cte("batch")
        )
        locators = sa.func.array(sa.select(batch.c.row_locator).scalar_subquery())
        ctes, counted = sink.delete_cte(self, sa.delete(table).where(ROW_LOCATOR == sa.any_(locators), selection),
                                        table, "")
        batch_keys = [batch.c[k.name] for k in keys]
        last_row = sa.select(*batch_keys).order_by(*[k.desc() for k in batch_keys]).limit(1).subquery("last_row")
        stmt = sa.select(
            sa.select(sa.func.count()).select_from(counted).scalar_subquery().label("n_deleted"),
            sa.select(sa.func.count()).select_from(batch).scalar_subquery().label("n_seen"),
            *last_row.c,
        )
        for cte in ctes:
            stmt = stmt.add_cte(cte)
        row = conn.execute(stmt).first()
        if row is None:
            return BatchOutcome(rows=0, last_key=None)
        finished = row.n_seen < size
        return BatchOutcome(rows=row.n_deleted, last_key=None if finished else list(row[2:]))

    def delete_block_range(self, conn, table, selection, first_block: int, end_block: int, sink=NO_ARCHIVE) -> int:
        """Delete the selected rows in heap blocks [first, end) (TID range scan)."""
        return sink.apply(conn, sa.delete(table).where(_in_blocks(first_block, end_block), selection), table)

    def delete_block_prefix(self, conn, table, selection, first_block: int, end_block: int, limit: int,
                            sink=NO_ARCHIVE) -> tuple[int, int | None]:
        """At most `limit` selected rows of blocks [first, end), the first ones in heap order; returns
        the count and, when the limit was reached, the block of the last row (where the walk goes on:
        that block may hold more)."""
        found = conn.execute(sa.select(ROW_LOCATOR).select_from(table)
                             .where(_in_blocks(first_block, end_block), selection)
                             .order_by(ROW_LOCATOR).limit(limit)).scalars().all()
        if not found:
            return 0, None
        chosen = sa.cast(sa.bindparam(None, [str(t) for t in found], type_=postgresql.ARRAY(sa.Text)),
                         postgresql.ARRAY(Tid()))
        rows = sink.apply(conn, sa.delete(table).where(ROW_LOCATOR == sa.any_(chosen), selection), table)
        last_block = int(str(found[-1]).strip("()").split(",")[0])
        return rows, last_block if len(found) == limit else None

    # unique constraints, built without blocking writers ---------------------------------------
    nulls_not_distinct = True

    def unique_index(self, table, name, columns, nulls_equal, concurrently=False):
        return sa.Index(name, *(table.c[c] for c in columns), unique=True, postgresql_concurrently=concurrently,
                        postgresql_nulls_not_distinct=nulls_equal)

    def build_index(self, engine, index, lock_s):
        """CREATE INDEX CONCURRENTLY: writers go on while it builds. It cannot run in a transaction,
        and may take longer than any statement_timeout, so it gets an autocommit session of its own
        with no statement timeout. A build that failed leaves an INVALID index, which is dropped
        before the error is raised, so a retry starts clean."""
        index.dialect_options["postgresql"]["concurrently"] = True
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            self.set_session_timeouts(conn, lock_s, 0)
            try:
                conn.execute(sa.schema.CreateIndex(index))
            except sa.exc.DBAPIError:
                if self.index_state(conn, index.table, index.name) == "invalid":
                    conn.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {self._index_name(conn, index)}"))
                raise

    def index_state(self, conn, table, name):
        valid = conn.execute(sa.text(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = to_regclass(:t) AND c.relname = :n"), {"t": self._regname(conn, table), "n": name}).first()
        return "missing" if valid is None else ("valid" if valid[0] else "invalid")

    def drop_index(self, engine, table, name):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            self.set_session_timeouts(conn, 2.0, 0)
            conn.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {self._index_name(conn, sa.Index(name, _table=table))}"))

    def constraint_using_index(self, conn, table, name, columns):
        prep = conn.dialect.identifier_preparer
        conn.execute(sa.text(f"ALTER TABLE {prep.format_table(table)} ADD CONSTRAINT {prep.quote(name)} "
                             f"UNIQUE USING INDEX {prep.quote(name)}"))

    def guard_key(self, conn, table, name, natural_key, key, nulls_equal):
        """A BEFORE INSERT OR UPDATE trigger that raises unique_violation (SQLSTATE 23505, as the
        constraint will) for a row whose natural key another row has. Rows of one key are
        serialized by a transaction advisory lock, so two sessions cannot both add the same new key.
        Without it, an ETL writing duplicates all the time would fail every concurrent build."""
        prep = conn.dialect.identifier_preparer
        q = prep.quote
        schema = table.schema or self.default_schema(conn)
        function, target = f"{q(schema)}.{q(name)}", prep.format_table(table)
        equal = "IS NOT DISTINCT FROM" if nulls_equal else "="
        same = " AND ".join(f"t.{q(c)} {equal} NEW.{q(c)}" for c in natural_key)
        other = f"({', '.join(f't.{q(c)}' for c in key)}) IS DISTINCT FROM ({', '.join(f'NEW.{q(c)}' for c in key)})"
        skip_nulls = "" if nulls_equal else (
            "IF " + " OR ".join(f"NEW.{q(c)} IS NULL" for c in natural_key) + " THEN RETURN NEW; END IF;")
        message = f"duplicate natural key in {table.fullname}: dbsweep is adding a unique constraint"
        conn.execute(sa.text(f"""
            CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $dbsweep$
            BEGIN
                {skip_nulls}
                PERFORM pg_advisory_xact_lock(hashtextextended(
                    ROW({", ".join(f"NEW.{q(c)}" for c in natural_key)})::text, 0));
                IF EXISTS (SELECT 1 FROM {target} t WHERE {same} AND {other}) THEN
                    RAISE unique_violation USING MESSAGE = {self._literal(conn, message)};
                END IF;
                RETURN NEW;
            END $dbsweep$""".replace(":", r"\:")))
        conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {q(name)} ON {target}"))
        conn.execute(sa.text(f"CREATE TRIGGER {q(name)} BEFORE INSERT OR UPDATE OF "
                             f"{', '.join(q(c) for c in natural_key)} ON {target} FOR EACH ROW EXECUTE FUNCTION {function}()"))

    def drop_key_guard(self, conn, table, name):
        prep = conn.dialect.identifier_preparer
        schema = table.schema or self.default_schema(conn)
        conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {prep.quote(name)} ON {prep.format_table(table)}"))
        conn.execute(sa.text(f"DROP FUNCTION IF EXISTS {prep.quote(schema)}.{prep.quote(name)}()"))

    @staticmethod
    def _literal(conn, text: str) -> str:
        return conn.execute(sa.text("SELECT quote_literal(:t)"), {"t": text}).scalar()

    def _index_name(self, conn, index: sa.Index) -> str:
        prep = conn.dialect.identifier_preparer
        schema = index.table.schema or self.default_schema(conn)
        return f"{prep.quote(schema)}.{prep.quote(index.name)}"

    # catalog: what depends on a table -------------------------------------------------------
    def waiting_sessions(self, conn):
        return conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() "
            "AND datname = current_database()")).scalar()

    # an OLTP session runs a statement only part of the time: one look would miss it half the time
    ACTIVE_LOOKS = 5

    def active_sessions(self, conn):
        """gh-ost's Threads_running for PostgreSQL: client sessions of this database in state
        'active', the most of ACTIVE_LOOKS looks (each its own transaction: pg_stat_activity is
        read once per transaction). Sessions idle in a transaction are not load, only held locks."""
        most = 0
        for _ in range(self.ACTIVE_LOOKS):
            with conn.begin():
                most = max(most, conn.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend' AND datname = current_database()")).scalar())
        return most

    def read_only(self, conn):
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")

    def throttle_value(self, conn, query):
        return super().throttle_value(conn, query.replace("%", "%%"))  # psycopg reads % as a placeholder

    def referencing_keys(self, conn, table):
        rows = conn.execute(sa.text("""
            SELECT con.conname, n.nspname, c.relname,
                   array(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, i)
                         JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.i) AS columns,
                   array(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(num, i)
                         JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.i) AS referred,
                   CASE con.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL' WHEN 'd' THEN 'SET DEFAULT'
                        WHEN 'r' THEN 'RESTRICT' ELSE 'NO ACTION' END AS on_delete
            FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE con.contype = 'f' AND con.confrelid = to_regclass(:t) AND con.conparentid = 0
            ORDER BY 2, 3, 1"""), {"t": self._regname(conn, table)}).all()
        return [{"name": r.conname, "schema": r.nspname, "table": r.relname, "columns": list(r.columns),
                 "referred_columns": list(r.referred), "on_delete": r.on_delete} for r in rows]

    def inbound_foreign_keys(self, conn, table):
        rows = conn.execute(sa.text("""
            SELECT con.conname, con.conrelid::regclass::text AS child FROM pg_constraint con
            WHERE con.contype = 'f' AND con.confrelid = to_regclass(:t) AND con.conrelid <> con.confrelid
            ORDER BY 2, 1"""), {"t": self._regname(conn, table)}).all()
        return [f"foreign key {r.conname} on {r.child}" for r in rows]

    def dependent_views(self, conn, table):
        rows = conn.execute(sa.text("""
            SELECT DISTINCT CASE c.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END AS kind,
                   c.oid::regclass::text AS name
            FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class c ON c.oid = r.ev_class
            WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = to_regclass(:t) AND c.oid <> d.refobjid
            ORDER BY 2"""), {"t": self._regname(conn, table)}).all()
        return [f"{r.kind} {r.name}" for r in rows]

    def dependent_routines(self, conn, table, names):
        """Triggers on the table, routines whose SQL-standard body depends on it (pg_depend), and
        routines whose source text names it as a whole word (PL/pgSQL bodies are not tracked)."""
        regname = self._regname(conn, table)
        words = "|".join(re.escape(n) for n in names)
        rows = conn.execute(sa.text("""
            SELECT 'trigger ' || t.tgname || ' on ' || t.tgrelid::regclass::text FROM pg_trigger t
            WHERE t.tgrelid = to_regclass(:t) AND NOT t.tgisinternal
            UNION
            SELECT 'routine ' || p.oid::regprocedure::text FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
            WHERE d.classid = 'pg_proc'::regclass AND d.refobjid = to_regclass(:t)
            UNION
            SELECT 'routine ' || p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prosrc ~* :pattern
            ORDER BY 1"""), {"t": regname, "pattern": rf"(^|[^\w])({words})([^\w]|$)"}).scalars().all()
        return list(rows)

    def databases_like(self, conn, pattern):
        return list(conn.execute(sa.text(
            "SELECT datname FROM pg_database WHERE datname LIKE :p AND NOT datistemplate AND datallowconn "
            "ORDER BY 1"), {"p": pattern}).scalars())

    def default_schema(self, conn):
        return conn.execute(sa.text("SELECT current_schema()")).scalar()

    def cannot_move_tables(self, conn):
        return None

    def move_table(self, conn, table, schema, new_name):
        prep = conn.dialect.identifier_preparer
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {prep.quote(schema)}"))
        old_schema = table.schema or self.default_schema(conn)
        if new_name != table.name:
            conn.execute(sa.text(f"ALTER TABLE {prep.format_table(table)} RENAME TO {prep.quote(new_name)}"))
        conn.execute(sa.text(f"ALTER TABLE {prep.quote(old_schema)}.{prep.quote(new_name)} SET SCHEMA {prep.quote(schema)}"))

    # range partitions ------------------------------------------------------------------
    def range_partitions(self, conn, table, column_name: str) -> list[Partition] | None:
        """The partitions of `table` when it is range-partitioned on `column_name` alone, with each
        partition's bounds as text; None when the fast path does not apply."""
        parent = self._regname(conn, table)
        keydef = conn.execute(sa.text(
            "SELECT pg_get_partkeydef(c.oid) FROM pg_class c WHERE c.oid = to_regclass(:t) AND c.relkind = 'p'"),
            {"t": parent}).scalar()
        if keydef != f"RANGE ({conn.dialect.identifier_preparer.quote(column_name)})":
            return None
        rows = conn.execute(sa.text("""
            SELECT n.nspname, c.relname, c.relkind, pg_get_expr(c.relpartbound, c.oid) AS bound
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE i.inhparent = to_regclass(:t) ORDER BY c.relname"""), {"t": parent}).all()
        if any(r.relkind != "r" for r in rows):  # sub-partitioned: walk the parent instead
            return None
        return [Partition(schema=r.nspname, name=r.relname, bound=r.bound, upper=_bound_value(r.bound, "TO"),
                          lower=_bound_value(r.bound, "FROM")) for r in rows]

    def compare_bound(self, conn, column: sa.Column, literal: str, moment) -> int:
        """-1, 0 or 1 as the partition bound `literal` (text from pg_get_expr) is before, at or after `moment`."""
        value = sa.cast(sa.literal(literal, sa.Text), column.type)
        return int(conn.execute(sa.select(sa.case((value < moment, -1), (value == moment, 0), else_=1))).scalar())

    def drop_partition(self, conn, parent: sa.Table, partition: sa.Table, archive_as: str | None) -> int:
        """Detach the partition and drop it, or (archive_as = schema.name) move it there. Counted
        first, under the detach's lock, so the ledger holds exactly what went."""
        prep = conn.dialect.identifier_preparer
        child = prep.format_table(partition)
        conn.execute(sa.text(f"LOCK TABLE {child} IN ACCESS EXCLUSIVE MODE"))
        rows = conn.execute(sa.select(sa.func.count()).select_from(partition)).scalar()
        conn.execute(sa.text(f"ALTER TABLE {prep.format_table(parent)} DETACH PARTITION {child}"))
        if archive_as is None:
            conn.execute(sa.text(f"DROP TABLE {child}"))
        else:
            schema, name = archive_as.split(".", 1)
            self.move_table(conn, partition, schema, name)
        return rows

    def reattach_partition(self, conn, archived: sa.Table, original: str, parent: sa.Table, bound: str) -> None:
        """Undo drop_partition with archive_as: move the table back under its old name, attach it again."""
        prep = conn.dialect.identifier_preparer
        o_schema, o_name = original.split(".", 1)
        self.move_table(conn, archived, o_schema, o_name)
        conn.execute(sa.text(f"ALTER TABLE {prep.format_table(parent)} ATTACH PARTITION "
                             f"{prep.quote(o_schema)}.{prep.quote(o_name)} {bound}"))


@dataclass
class Partition:
    schema: str
    name: str
    bound: str  # FOR VALUES FROM (...) TO (...), or DEFAULT
    lower: str | None  # the bound's literal text; None for MINVALUE/MAXVALUE/DEFAULT
    upper: str | None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


_BOUND = re.compile(r"FROM \((?P<FROM>.*)\) TO \((?P<TO>.*)\)$")


def _bound_value(bound: str, side: str) -> str | None:
    match = _BOUND.search(bound or "")
    if not match:
        return None
    text = match.group(side).strip()
    if not (text.startswith("'") and text.endswith("'")):
        return None  # MINVALUE / MAXVALUE
    return text[1:-1].replace("''", "'")


def _archived_delete(stmt: sa.Delete, table: sa.Table, archive: ArchiveTables, stamp: dict, suffix: str):
    """The CTEs `gone` (DELETE ... RETURNING *) and `opened` (the batch numbered in the archive's
    batch table, only when something was deleted), and the INSERT INTO archive SELECT gone.*, the
    number FROM gone that reads them: a delete and its archive in one statement."""
    batches = archive.batches
    gone = stmt.returning(*table.c).cte(f"gone{suffix}")
    deleted_any = sa.exists(sa.select(sa.literal(1)).select_from(gone))
    opened = (sa.insert(batches).from_select(
        [RUN_ID, BATCH_NO], sa.select(sa.literal(stamp[RUN_ID], sa.String), sa.literal(stamp[BATCH_NO], sa.Integer))
        .where(deleted_any)).returning(batches.c[BATCH]).cte(f"opened{suffix}"))
    number = sa.select(opened.c[BATCH]).scalar_subquery()
    copied = sa.select(*[gone.c[name] for name in table.c.keys()], number)
    return gone, opened, sa.insert(archive.rows).from_select([*table.c.keys(), BATCH], copied)


def _insert_overriding(conn, table: sa.Table, names: list[str]) -> str:
    """INSERT INTO t (names) OVERRIDING SYSTEM VALUE: archived identity values go back as they were."""
    prep = conn.dialect.identifier_preparer
    return f"INSERT INTO {prep.format_table(table)} ({', '.join(prep.quote(n) for n in names)}) OVERRIDING SYSTEM VALUE"


def _in_blocks(first_block: int, end_block: int) -> sa.ColumnElement:
    """ctid in heap blocks [first, end): literals, so the planner sees the range (TID Range Scan)."""
    return sa.and_(ROW_LOCATOR >= sa.literal_column(f"'({int(first_block)},0)'::tid"),
                   ROW_LOCATOR < sa.literal_column(f"'({int(end_block)},0)'::tid"))


def _delete_some_statement(table: sa.Table, where, limit: int | None) -> sa.Delete:
    """DELETE of at most `limit` rows matching `where`, addressed by ctid (no limit: all of them)."""
    if limit is None:
        return sa.delete(table).where(where)
    some = sa.func.array(sa.select(ROW_LOCATOR).select_from(table).where(where).limit(limit).scalar_subquery())
    return sa.delete(table).where(ROW_LOCATOR == sa.any_(some))
