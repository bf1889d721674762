"""PostgreSQL: rebuild a table from the rows it keeps, online (the `rebuild` strategy of dedupe and
retention, `dbsweep.kinds.rebuild`).

A shadow table shaped like the original (no indexes yet) is filled with the kept rows (dedupe: by
a loose index scan over the natural key; retention: key range by key range); a trigger on the
original logs the key (and what the rule needs) of every row written meanwhile, and those rows are
replayed into the shadow; the swap renames both tables
inside one short ACCESS EXCLUSIVE lock, after the last replay, and gives the new table every
index, constraint, trigger, grant, comment, owner and sequence the old one had under their old
names. The old table stays, renamed, as the exact backup."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import sqlalchemy as sa

from ..errors import BadInput
from ..names import derived
from .postgresql import PostgresDialect


@dataclass
class RebuildNames:
    """The objects a rebuild creates, all derived from the table's name at plan time."""

    shadow: str
    log: str
    capture: str  # the trigger and its function
    backup: str


def _tagged(name: str, salt: str, suffix: str) -> str:
    """A name that is the same in every process (unlike hash()) and fits PostgreSQL's limit."""
    return derived(f"{name}_{hashlib.sha256((salt + name).encode()).hexdigest()[:8]}", suffix)


def order_by(conn, alias: str, order: list[tuple[str, bool]]) -> str:
    """The kept-row rule as an ORDER BY list: (column, descending) pairs."""
    return ", ".join(f"{alias}.{_prep(conn).quote(c)}{' DESC' if desc else ''}" for c, desc in order)


def _prep(conn):
    return conn.dialect.identifier_preparer


def _qualified(conn, schema: str, name: str) -> str:
    return f"{_prep(conn).quote(schema)}.{_prep(conn).quote(name)}"


def _regclass(conn, table: sa.Table) -> int:
    schema = table.schema or _schema(conn)
    oid = conn.execute(sa.text("SELECT to_regclass(:t)::oid"), {"t": _qualified(conn, schema, table.name)}).scalar()
    if oid is None:
        raise BadInput(f"table '{table.fullname}' does not exist")
    return oid


def blockers(conn: sa.Connection, table: sa.Table) -> list[str]:
    """What a rebuild cannot carry over to the new table safely; empty when it can."""
    oid = _regclass(conn, table)
    found = conn.execute(sa.text("""
        SELECT 'foreign key ' || con.conname || ' on ' || con.conrelid::regclass::text || ' points at it'
        FROM pg_constraint con WHERE con.contype = 'f' AND con.confrelid = :oid
        UNION ALL SELECT 'view ' || v.ev_class::regclass::text || ' reads it' FROM pg_depend d
            JOIN pg_rewrite v ON v.oid = d.objid WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = :oid
            AND v.ev_class <> :oid
        UNION ALL SELECT 'identity column ' || attname FROM pg_attribute WHERE attrelid = :oid AND attidentity <> ''
        UNION ALL SELECT 'column privileges on ' || attname FROM pg_attribute WHERE attrelid = :oid AND attacl IS NOT NULL
        UNION ALL SELECT 'partitioned or inherited' FROM pg_class c WHERE c.oid = :oid
            AND (c.relkind = 'p' OR c.relispartition OR EXISTS (SELECT 1 FROM pg_inherits i
                 WHERE i.inhrelid = :oid OR i.inhparent = :oid))
        UNION ALL SELECT 'row-level security' FROM pg_class WHERE oid = :oid AND (relrowsecurity OR relforcerowsecurity)
        UNION ALL SELECT 'rule ' || rulename FROM pg_rules r JOIN pg_class c ON c.relname = r.tablename
            WHERE c.oid = :oid
        UNION ALL SELECT 'replica identity other than the default' FROM pg_class WHERE oid = :oid AND relreplident <> 'd'
        UNION ALL SELECT 'publication ' || p.pubname FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
            WHERE pr.prrelid = :oid
        UNION ALL SELECT 'exclusion or deferrable constraint ' || conname FROM pg_constraint
            WHERE conrelid = :oid AND (contype = 'x' OR condeferrable)
        """), {"oid": oid}).scalars().all()
    return list(found)


def drop_index_here(conn: sa.Connection, schema: str | None, name: str) -> None:
    """DROP INDEX in the caller's transaction (an index of a table nobody uses, the backup's)."""
    prep = conn.dialect.identifier_preparer
    conn.execute(sa.text(f"DROP INDEX IF EXISTS {prep.quote(schema) + '.' if schema else ''}{prep.quote(name)}"))


def copied_columns(conn: sa.Connection, table: sa.Table) -> list[str]:
    """The columns a copy writes: all but generated ones (the new table computes those itself)."""
    return list(conn.execute(sa.text(
        "SELECT attname FROM pg_attribute WHERE attrelid = :oid AND attnum > 0 AND NOT attisdropped "
        "AND attgenerated = '' ORDER BY attnum"), {"oid": _regclass(conn, table)}).scalars())


def column_types(conn: sa.Connection, table: sa.Table) -> dict[str, str]:
    return dict(conn.execute(sa.text(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = :oid AND attnum > 0 "
        "AND NOT attisdropped"), {"oid": _regclass(conn, table)}).all())


def create_shadow(conn: sa.Connection, table: sa.Table, names: RebuildNames, logged: list[str]) -> None:
    """In the caller's transaction: the shadow table (columns, defaults, checks, storage, comments;
    no indexes: the copy is faster without them), the change log of the `logged` columns, and the
    trigger that fills it."""
    p = _prep(conn)
    schema = table.schema or _schema(conn)
    old = _qualified(conn, schema, table.name)
    shadow, log = _qualified(conn, schema, names.shadow), _qualified(conn, schema, names.log)
    types = column_types(conn, table)
    conn.execute(sa.text(f"CREATE TABLE {shadow} (LIKE {old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                         "INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS INCLUDING COMPRESSION)"))
    # each change's transaction and what it did to the row count (+1 insert, -1 delete): see census_delta
    conn.execute(sa.text(
        f"CREATE TABLE {log} (dbsweep_id bigserial PRIMARY KEY, "
        + "".join(f"{p.quote(c)} {types[c]}, " for c in logged)
        + "dbsweep_xid xid8 NOT NULL DEFAULT pg_current_xact_id(), dbsweep_sign smallint NOT NULL)"))
    function = _qualified(conn, schema, names.capture)
    old_values = "".join(f"OLD.{p.quote(c)}, " for c in logged)
    new_values = "".join(f"NEW.{p.quote(c)}, " for c in logged)
    column_list = "".join(f"{p.quote(c)}, " for c in logged) + "dbsweep_sign"
    conn.execute(sa.text(f"""
        CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $dbsweep$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                INSERT INTO {log} ({column_list}) VALUES ({old_values}CASE TG_OP WHEN 'DELETE' THEN -1 ELSE 0 END);
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                INSERT INTO {log} ({column_list}) VALUES ({new_values}CASE TG_OP WHEN 'INSERT' THEN 1 ELSE 0 END);
            END IF;
            RETURN NULL;
        END $dbsweep$""".replace(":", r"\:")))
    conn.execute(sa.text(f"CREATE TRIGGER {p.quote(names.capture)} AFTER INSERT OR UPDATE OR DELETE ON {old} "
                         f"FOR EACH ROW EXECUTE FUNCTION {function}()"))


def copy_kept(conn: sa.Connection, table: sa.Table, shadow: str, nk: list[str], order: list[tuple[str, bool]],
              columns: list[str],
              types: dict[str, str], after: list | None, keys: int) -> tuple[int, list | None]:
    # order: the kept-row rule, (column, descending) pairs
    """Copy the kept row of each of the next `keys` natural keys after `after` into the shadow:
    a loose index scan (one index probe per key, not a read of every duplicate). Returns the rows
    copied and the last key visited (None: no key is left). Keys with a NULL part are not kept
    here (see `copy_null_keys`)."""
    p = _prep(conn)
    old, new = p.format_table(table), _qualified(conn, table.schema or _schema(conn), shadow)
    key_list = ", ".join(p.quote(c) for c in nk)
    row = lambda alias: "(" + ", ".join(f"{alias}.{p.quote(c)}" for c in nk) + ")"  # noqa: E731
    params = {"keys": keys}
    start = ""
    if after is not None:
        params |= {f"a{i}": v for i, v in enumerate(after)}
        start = "WHERE " + row("o") + " > (" + ", ".join(f"CAST(:a{i} AS {types[c]})" for i, c in enumerate(nk)) + ")"
    same_key = " AND ".join(f"o.{p.quote(c)} = k.{p.quote(c)}" for c in nk)
    cols = ", ".join(p.quote(c) for c in columns)
    result = conn.execute(sa.text(f"""
        WITH RECURSIVE walk AS (
            (SELECT 1 AS dbsweep_i, {", ".join(f"o.{p.quote(c)}" for c in nk)} FROM {old} o {start}
             ORDER BY {key_list} LIMIT 1)
            UNION ALL
            SELECT k.dbsweep_i + 1, n.* FROM walk k CROSS JOIN LATERAL (
                SELECT {", ".join(f"o.{p.quote(c)}" for c in nk)} FROM {old} o WHERE {row("o")} > {row("k")}
                ORDER BY {key_list} LIMIT 1) n
            WHERE k.dbsweep_i < :keys
        ),
        kept AS (
            SELECT o.* FROM walk k CROSS JOIN LATERAL (
                SELECT * FROM {old} o WHERE {same_key} ORDER BY {order_by(conn, "o", order)} LIMIT 1) o
        ),
        copied AS (INSERT INTO {new} ({cols}) SELECT {cols} FROM kept RETURNING 1)
        SELECT (SELECT count(*) FROM copied) AS copied, (SELECT count(*) FROM walk) AS visited,
               last.* FROM (SELECT * FROM walk ORDER BY dbsweep_i DESC LIMIT 1) last"""), params).first()
    if result is None:
        return 0, None
    copied, visited, last = result.copied, result.visited, list(result[3:])
    return copied, (last if visited >= keys else None)


def copy_null_keys(conn: sa.Connection, table: sa.Table, shadow: str, nk: list[str], order: list[tuple[str, bool]],
                   columns: list[str], nulls_equal: bool) -> int:
    """Rows whose natural key has a NULL part: all kept when NULLs are distinct (SQL's rule), else
    the kept one of each group (DISTINCT ON counts NULLs as equal)."""
    p = _prep(conn)
    old, new = p.format_table(table), _qualified(conn, table.schema or _schema(conn), shadow)
    cols = ", ".join(p.quote(c) for c in columns)
    any_null = " OR ".join(f"{p.quote(c)} IS NULL" for c in nk)
    if nulls_equal:
        keys = ", ".join(p.quote(c) for c in nk)
        source = (f"SELECT DISTINCT ON ({keys}) * FROM {old} o WHERE {any_null} "
                  f"ORDER BY {keys}, {order_by(conn, 'o', order)}")
    else:
        source = f"SELECT * FROM {old} WHERE {any_null}"
    return conn.execute(sa.text(f"INSERT INTO {new} ({cols}) SELECT {cols} FROM ({source}) s")).rowcount


def _schema(conn) -> str:
    return PostgresDialect().default_schema(conn)


def clone_structure(conn: sa.Connection, table: sa.Table, names: RebuildNames, skip_indexes: list[str]) -> list[tuple[str, str]]:
    """Give the shadow the old table's indexes (under temporary names), the constraints that stand
    on them, and its outbound foreign keys. Returns (old index name, temporary name) pairs, for
    the swap to rename."""
    p = _prep(conn)
    oid = _regclass(conn, table)
    schema = table.schema or _schema(conn)
    shadow = _qualified(conn, schema, names.shadow)
    shadow_oid = conn.execute(sa.text("SELECT to_regclass(:t)::oid"), {"t": shadow}).scalar()
    pairs = []
    indexes = conn.execute(sa.text("""
        SELECT c.relname, pg_get_indexdef(i.indexrelid) AS definition, con.contype, con.conname,
               obj_description(i.indexrelid, 'pg_class') AS comment,
               obj_description(con.oid, 'pg_constraint') AS con_comment
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
        WHERE i.indrelid = :oid ORDER BY c.relname"""), {"oid": oid}).all()
    for index in indexes:
        if index.relname in skip_indexes:
            continue
        temporary = _tagged(index.relname, names.shadow, "_n")
        head, _, tail = index.definition.partition(" ON ")
        using = tail.split(" USING ", 1)[1]
        unique = "UNIQUE " if head.startswith("CREATE UNIQUE") else ""
        conn.execute(sa.text(f"CREATE {unique}INDEX {p.quote(temporary)} ON {shadow} USING {using}".replace(":", r"\:")))
        if index.contype in ("p", "u"):
            kind = "PRIMARY KEY" if index.contype == "p" else "UNIQUE"
            conn.execute(sa.text(f"ALTER TABLE {shadow} ADD CONSTRAINT {p.quote(temporary)} {kind} USING INDEX "
                                 f"{p.quote(temporary)}"))
            if index.con_comment is not None:
                _comment(conn, f"CONSTRAINT {p.quote(temporary)} ON {shadow}", index.con_comment)
        if index.comment is not None:
            _comment(conn, f"INDEX {_qualified(conn, schema, temporary)}", index.comment)
        pairs.append((index.relname, temporary))
    for fk in conn.execute(sa.text(
            "SELECT conname, pg_get_constraintdef(oid) AS definition, obj_description(oid, 'pg_constraint') AS comment "
            "FROM pg_constraint WHERE conrelid = :oid AND contype = 'f' ORDER BY conname"), {"oid": oid}).all():
        exists = conn.execute(sa.text("SELECT 1 FROM pg_constraint WHERE conrelid = :oid AND conname = :n"),
                              {"oid": shadow_oid, "n": fk.conname}).first()
        if exists is None:
            conn.execute(sa.text(f"ALTER TABLE {shadow} ADD CONSTRAINT {p.quote(fk.conname)} {fk.definition}"
                                 .replace(":", r"\:")))
            if fk.comment is not None:
                _comment(conn, f"CONSTRAINT {p.quote(fk.conname)} ON {shadow}", fk.comment)
    return pairs


def _comment(conn, target: str, text: str) -> None:
    literal = conn.execute(sa.text("SELECT quote_literal(:c)"), {"c": text}).scalar()
    conn.execute(sa.text(f"COMMENT ON {target} IS {literal}".replace(":", r"\:")))


TOUCHED = "dbsweep_touched"


def take_log(conn: sa.Connection, table: sa.Table, names: RebuildNames, limit: int | None) -> int:
    """Move up to `limit` logged changes (all with None) into the temporary table `dbsweep_touched`
    (emptied at commit), deleting them from the log in the same transaction: a change logged by a
    transaction that commits later stays in the log for a later call (an id cursor would skip it).
    Returns the changes taken."""
    schema = table.schema or _schema(conn)
    log = _qualified(conn, schema, names.log)
    take = f"ORDER BY dbsweep_id LIMIT {int(limit)}" if limit is not None else ""
    conn.execute(sa.text(f"CREATE TEMP TABLE IF NOT EXISTS {TOUCHED} (LIKE {log}) ON COMMIT DELETE ROWS"))
    conn.execute(sa.text(f"TRUNCATE {TOUCHED}"))
    consumed = conn.execute(sa.text(
        f"WITH taken AS (DELETE FROM {log} WHERE dbsweep_id IN (SELECT dbsweep_id FROM {log} {take}) RETURNING *) "
        f"INSERT INTO {TOUCHED} SELECT * FROM taken")).rowcount
    if consumed:
        conn.execute(sa.text(f"ANALYZE {TOUCHED}"))  # a temporary table has no statistics otherwise
    return consumed


def snapshot_count(conn: sa.Connection, table: sa.Table) -> tuple[str, int]:
    """The table's rows and the snapshot they were counted under, in one REPEATABLE READ read
    (the caller's connection, a transaction of its own)."""
    conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
    # one core: parallel workers would take the one the copy runs on
    conn.execute(sa.text("SET LOCAL max_parallel_workers_per_gather = 0"))
    found = conn.execute(sa.text(
        f"SELECT pg_current_snapshot()::text, (SELECT count(*) FROM {_prep(conn).format_table(table)})")).one()
    return found[0], found[1]


def census_delta(conn: sa.Connection, snapshot: str) -> int:
    """What the changes just taken from the log (`take_log`) did to the table's row count, counting
    only transactions the census `snapshot` did not see: a write that snapshot saw is in its count."""
    return conn.execute(sa.text(
        f"SELECT coalesce(sum(dbsweep_sign) FILTER (WHERE NOT pg_visible_in_snapshot(dbsweep_xid, "
        f"CAST(:s AS pg_snapshot))), 0) FROM {TOUCHED}"), {"s": snapshot}).scalar()


def cancel(conn: sa.Connection) -> None:
    """Cancel the statement running on `conn` (from another thread)."""
    conn.connection.dbapi_connection.cancel_safe()


def consume_log(conn: sa.Connection, table: sa.Table, names: RebuildNames, pk: list[str], nk: list[str],
                order: list[tuple[str, bool]], columns: list[str], nulls_equal: bool, limit: int | None) -> int:
    """Dedupe's replay of up to `limit` logged changes (`take_log`): every shadow row of a touched
    key or primary key is replaced by what the original now keeps for that key. Returns the
    changes consumed."""
    p = _prep(conn)
    schema = table.schema or _schema(conn)
    shadow, old = _qualified(conn, schema, names.shadow), p.format_table(table)
    consumed = take_log(conn, table, names, limit)
    if not consumed:
        return 0
    pks, nks = ", ".join(p.quote(c) for c in pk), ", ".join(p.quote(c) for c in nk)
    row = lambda alias, cs: "(" + ", ".join(f"{alias}.{p.quote(c)}" for c in cs) + ")"  # noqa: E731
    touched_key = f"{row('s', nk)} IN (SELECT {nks} FROM dbsweep_touched)"
    if nulls_equal:
        same = " AND ".join(f"s.{p.quote(c)} IS NOT DISTINCT FROM t.{p.quote(c)}" for c in nk)
        touched_key = f"EXISTS (SELECT 1 FROM dbsweep_touched t WHERE {same})"
    conn.execute(sa.text(f"DELETE FROM {shadow} s WHERE {row('s', pk)} IN (SELECT {pks} FROM dbsweep_touched)"))
    conn.execute(sa.text(f"DELETE FROM {shadow} s WHERE {touched_key}"))
    cols = ", ".join(p.quote(c) for c in columns)
    some_null = " OR ".join(f"{{a}}.{p.quote(c)} IS NULL" for c in nk)
    # each touched key's kept row, one index probe per key (as the copy found it)
    conn.execute(sa.text(
        f"INSERT INTO {shadow} ({cols}) SELECT {', '.join(f'o.{p.quote(c)}' for c in columns)} "
        f"FROM (SELECT DISTINCT {nks} FROM dbsweep_touched t WHERE NOT ({some_null.format(a='t')})) t "
        f"CROSS JOIN LATERAL (SELECT * FROM {old} o WHERE {' AND '.join(f'o.{p.quote(c)} = t.{p.quote(c)}' for c in nk)} "
        f"ORDER BY {order_by(conn, 'o', order)} LIMIT 1) o"))
    if nulls_equal:  # keys with a NULL part: the kept row of each such touched key
        same = " AND ".join(f"s.{p.quote(c)} IS NOT DISTINCT FROM t.{p.quote(c)}" for c in nk)
        conn.execute(sa.text(
            f"INSERT INTO {shadow} ({cols}) SELECT DISTINCT ON ({', '.join(f's.{p.quote(c)}' for c in nk)}) "
            f"{', '.join(f's.{p.quote(c)}' for c in columns)} FROM {old} s WHERE ({some_null.format(a='s')}) "
            f"AND EXISTS (SELECT 1 FROM dbsweep_touched t WHERE {same}) "
            f"ORDER BY {', '.join(f's.{p.quote(c)}' for c in nk)}, {order_by(conn, 's', order)}"))
    else:  # rows with a NULL key part equal no other row: each touched one, by its primary key
        conn.execute(sa.text(f"INSERT INTO {shadow} ({cols}) SELECT {cols} FROM {old} s WHERE {row('s', pk)} IN "
                             f"(SELECT {pks} FROM dbsweep_touched) AND ({some_null.format(a='s')})"))
    return consumed


def replay_by_key(conn: sa.Connection, table: sa.Table, names: RebuildNames, pk: list[str], columns: list[str],
                  keep: sa.ColumnElement, limit: int | None) -> tuple[int, int]:
    """Retention's replay of up to `limit` logged changes (`take_log`): each touched primary key's
    shadow row is replaced by the original's row of that key, if the rule keeps it. Returns the
    changes consumed and the net rows the shadow gained."""
    consumed = take_log(conn, table, names, limit)
    if not consumed:
        return 0, 0
    shadow = sa.table(names.shadow, *(sa.column(c) for c in columns), schema=table.schema)
    touched = sa.table(TOUCHED, *(sa.column(k) for k in pk))  # temporary: no schema
    in_touched = lambda t: sa.tuple_(*(t.c[k] for k in pk)).in_(sa.select(*(touched.c[k] for k in pk)))  # noqa: E731
    gone = _counted(conn, sa.delete(shadow).where(in_touched(shadow)))
    back = _counted(conn, sa.insert(shadow).from_select(columns, sa.select(*(table.c[c] for c in columns)).where(
        in_touched(table), keep)))
    return consumed, back - gone


def _counted(conn: sa.Connection, statement) -> int:
    """Run an INSERT or DELETE and return its rows from the server's command tag (SQLAlchemy 2.1
    reports none for INSERT ... SELECT unless asked to keep it; counting a RETURNING instead cost a
    quarter of a copy's time)."""
    return conn.execute(statement, execution_options={"preserve_rowcount": True}).rowcount


def correlation(conn: sa.Connection, table: sa.Table, column: str) -> float | None:
    """How closely the column's order follows the rows' physical order (pg_stats, -1 to 1; None
    before an ANALYZE)."""
    return conn.execute(sa.text(
        "SELECT correlation FROM pg_stats WHERE schemaname = :s AND tablename = :t AND attname = :c"),
        {"s": table.schema or _schema(conn), "t": table.name, "c": column}).scalar()


def copy_next(conn: sa.Connection, table: sa.Table, shadow: str, columns: list[str], where: list[sa.ColumnElement],
              order: list[sa.Column], size: int) -> tuple[int, list | None]:
    """Copy the next `size` rows that `where` selects, in `order`, into the shadow, in one
    statement; returns the rows copied and the `order` values of the last (None: none left)."""
    target = sa.table(shadow, *(sa.column(c) for c in columns), schema=table.schema)
    names = list(dict.fromkeys([*columns, *(c.name for c in order)]))
    picked = sa.select(*(table.c[n] for n in names)).where(*where).order_by(*order).limit(size).cte("dbsweep_picked")
    copied = sa.insert(target).from_select(columns, sa.select(*(picked.c[c] for c in columns))).cte("dbsweep_copied")
    found = conn.execute(sa.select(sa.select(sa.func.count()).select_from(picked).scalar_subquery(),
                                   *(sa.select(picked.c[c.name]).order_by(*(picked.c[o.name].desc() for o in order))
                                     .limit(1).scalar_subquery() for c in order))
                         .add_cte(copied)).one()
    return found[0], (list(found[1:]) if found[0] else None)


def copy_window(conn: sa.Connection, table: sa.Table, shadow: str, columns: list[str], when: sa.Column,
                start: sa.ColumnElement, size: int) -> tuple[int, object]:
    """Copy the rows from `start` (a test on `when`) up to the `size`-th one in `when`'s order and
    every row that shares its time, as one plain range INSERT: no sort, and the bound found by
    reading `size` entries of `when`'s index. Returns the rows copied and the last time copied
    (None: the rest of the table was copied)."""
    bound = conn.execute(sa.select(when).where(start).order_by(when).offset(size - 1).limit(1)).scalar()
    window = start if bound is None else sa.and_(start, when <= bound)
    target = sa.table(shadow, *(sa.column(c) for c in columns), schema=table.schema)
    copied = _counted(conn, sa.insert(target).from_select(columns, sa.select(*(table.c[c] for c in columns))
                                                          .where(window)))
    return copied, bound


def copy_range(conn: sa.Connection, table: sa.Table, shadow: str, columns: list[str], keep: sa.ColumnElement,
               window: sa.ColumnElement) -> int:
    """Copy the rows of a key window that the rule keeps into the shadow, in key order (the new
    table comes out clustered on its key). Returns the rows copied."""
    target = sa.table(shadow, *(sa.column(c) for c in columns), schema=table.schema)
    keys = list(table.primary_key.columns)
    source = sa.select(*(table.c[c] for c in columns)).where(window, keep).order_by(*keys)
    return _counted(conn, sa.insert(target).from_select(columns, source))


def swap(conn: sa.Connection, table: sa.Table, names: RebuildNames, pairs: list[tuple[str, str]],
         replay) -> None:
    """In the caller's transaction, whose lock_timeout bounds the wait: lock the original, replay
    the rest of the log, and put the shadow in its place with everything the original had."""
    p = _prep(conn)
    schema = table.schema or _schema(conn)
    old = _qualified(conn, schema, table.name)
    oid = _regclass(conn, table)
    conn.execute(sa.text(f"LOCK TABLE {old} IN ACCESS EXCLUSIVE MODE"))
    replay()
    triggers = conn.execute(sa.text(
        "SELECT tgname, pg_get_triggerdef(oid) AS definition, obj_description(oid, 'pg_trigger') AS comment, tgenabled "
        "FROM pg_trigger WHERE tgrelid = :oid AND NOT tgisinternal AND tgname <> :ours ORDER BY tgname"),
        {"oid": oid, "ours": names.capture}).all()
    facts = conn.execute(sa.text(
        "SELECT pg_get_userbyid(relowner) AS owner, obj_description(oid, 'pg_class') AS comment, reloptions "
        "FROM pg_class WHERE oid = :oid"), {"oid": oid}).one()
    grants = conn.execute(sa.text(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee, "
        "a.privilege_type, a.is_grantable FROM pg_class c, aclexplode(c.relacl) a "
        "WHERE c.oid = :oid AND a.grantee <> c.relowner"), {"oid": oid}).all()
    owned = conn.execute(sa.text(
        "SELECT s.oid::regclass::text AS seq, a.attname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid "
        "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "WHERE d.refobjid = :oid AND d.classid = 'pg_class'::regclass AND s.relkind = 'S' AND d.deptype = 'a'"),
        {"oid": oid}).all()
    conn.execute(sa.text(f"DROP TRIGGER {p.quote(names.capture)} ON {old}"))
    conn.execute(sa.text(f"DROP FUNCTION {_qualified(conn, schema, names.capture)}()"))
    conn.execute(sa.text(f"ALTER TABLE {old} RENAME TO {p.quote(names.backup)}"))
    conn.execute(sa.text(f"ALTER TABLE {_qualified(conn, schema, names.shadow)} RENAME TO {p.quote(table.name)}"))
    for original, temporary in pairs:
        kept_as = _tagged(original, names.backup, "_b")
        conn.execute(sa.text(f"ALTER INDEX {_qualified(conn, schema, original)} RENAME TO {p.quote(kept_as)}"))
        conn.execute(sa.text(f"ALTER INDEX {_qualified(conn, schema, temporary)} RENAME TO {p.quote(original)}"))
    for seq in owned:
        conn.execute(sa.text(f"ALTER SEQUENCE {seq.seq} OWNED BY {old}.{p.quote(seq.attname)}"))
    if facts.owner != conn.execute(sa.text("SELECT current_user")).scalar():
        conn.execute(sa.text(f"ALTER TABLE {old} OWNER TO {p.quote(facts.owner)}"))
    for grant in grants:
        option = " WITH GRANT OPTION" if grant.is_grantable else ""
        conn.execute(sa.text(f"GRANT {grant.privilege_type} ON {old} TO {grant.grantee}{option}"))
    if facts.reloptions:
        conn.execute(sa.text(f"ALTER TABLE {old} SET ({', '.join(facts.reloptions)})"))
    if facts.comment is not None:
        _comment(conn, f"TABLE {old}", facts.comment)
    for trigger in triggers:  # their text names the table by its name, which the new table now has
        conn.execute(sa.text(trigger.definition.replace(":", r"\:")))
        if trigger.comment is not None:
            _comment(conn, f"TRIGGER {p.quote(trigger.tgname)} ON {old}", trigger.comment)
        if trigger.tgenabled != "O":
            state = {"D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}[trigger.tgenabled]
            conn.execute(sa.text(f"ALTER TABLE {old} {state} TRIGGER {p.quote(trigger.tgname)}"))
    conn.execute(sa.text(f"DROP TABLE {_qualified(conn, schema, names.log)}"))


def discard(conn: sa.Connection, table: sa.Table, names: RebuildNames) -> list[str]:
    """Undo an unfinished rebuild (before its swap): drop the trigger, its function, the log and
    the shadow. Returns what was dropped."""
    p = _prep(conn)
    schema = table.schema or _schema(conn)
    dropped = []
    if conn.execute(sa.text("SELECT 1 FROM pg_trigger WHERE tgrelid = :oid AND tgname = :n"),
                    {"oid": _regclass(conn, table), "n": names.capture}).first():
        conn.execute(sa.text(f"DROP TRIGGER {p.quote(names.capture)} ON {p.format_table(table)}"))
        dropped.append(f"trigger {names.capture}")
    conn.execute(sa.text(f"DROP FUNCTION IF EXISTS {_qualified(conn, schema, names.capture)}()"))
    for name in (names.log, names.shadow):
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": _qualified(conn, schema, name)}).scalar():
            conn.execute(sa.text(f"DROP TABLE {_qualified(conn, schema, name)}"))
            dropped.append(f"table {name}")
    return dropped
