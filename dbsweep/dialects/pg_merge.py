"""PostgreSQL: merge duplicate parent rows into one survivor per group (kind `merge`), set-based,
with a journal of every change written by the same statement that makes it.

A batch builds a map (loser → survivor) for its groups, then, for each table pointing at the
parents (foreign keys from the catalog, polymorphic pairs from the policy): children that would
collide on a unique constraint after the move are merged the same way one level down (or renamed),
the rest are re-pointed, and the losers deleted. Each UPDATE and DELETE returns what it changed
into the journal: the pointer's table, key, column and old value; each deleted row whole
(to_jsonb). Restore replays the journal backwards with jsonb_populate_record, so every value
comes back with its column's type."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from ..errors import GateRefused


def _q(conn, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def qualified(conn, name: str) -> str:
    """A reflected table's `fullname` (schema.name) as SQL."""
    schema, _, table = name.rpartition(".")
    return f"{_q(conn, schema)}.{_q(conn, table)}" if schema else _q(conn, table)


def unique_sets(conn: sa.Connection, table: str, column: str) -> list[list[str]]:
    """The column lists of the unique constraints and unique indexes (not partial, not expression)
    of `table` that include `column`: where re-pointing it can collide."""
    rows = conn.execute(sa.text("""
        SELECT array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(num, o)
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num ORDER BY k.o) AS cols
        FROM pg_index i WHERE i.indrelid = to_regclass(:t) AND i.indisunique AND NOT i.indisprimary
          AND i.indpred IS NULL AND i.indexprs IS NULL ORDER BY i.indexrelid"""), {"t": qualified(conn, table)}).all()
    return [list(r.cols) for r in rows if column in r.cols]


def plausible_polymorphic(conn: sa.Connection, known: set[str]) -> list[str]:
    """Tables with a `<x>_type` + `<x>_id` (or `type` + `id`) column pair that the policy does not
    list (`known`: "table:id_column"): children dbsweep cannot discover, for the profile to name."""
    rows = conn.execute(sa.text("""
        SELECT n.nspname || '.' || c.relname AS tbl, c.relname, t.attname AS type_col, i.attname AS id_col
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute t ON t.attrelid = c.oid AND t.attnum > 0 AND NOT t.attisdropped
        JOIN pg_attribute i ON i.attrelid = c.oid AND i.attnum > 0 AND NOT i.attisdropped
        WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'dbsweep')
          AND t.attname ~ '(^|_)type$' AND i.attname = regexp_replace(t.attname, 'type$', 'id')
        ORDER BY 1, 2"""), {}).all()
    return [f"{r.tbl} ({r.type_col}, {r.id_col})" for r in rows if f"{r.relname}:{r.id_col}" not in known]


def journal_table(conn, table: str, journal: str) -> str:
    """The journal as SQL: `journal` in the schema of `table` (a `schema.name`)."""
    return qualified(conn, f"{table.rpartition('.')[0]}.{journal}" if "." in table else journal)


# a journal row's seal: what dbsweep wrote, as jsonb's canonical text, hashed in the same transaction
JOURNAL_SEAL = ("encode(sha256(convert_to(jsonb_build_array(run_id, batch_no, step, action, table_name, key, "
                "column_name, old_value, row_data)::text, 'UTF8')), 'hex')")


def ensure_journal(conn: sa.Connection, table: str, name: str) -> str:
    target = journal_table(conn, table, name)
    conn.execute(sa.text(
        f"CREATE TABLE IF NOT EXISTS {target} (id bigserial PRIMARY KEY, run_id text NOT NULL, batch_no int NOT NULL, "
        "step int NOT NULL, action text NOT NULL, table_name text NOT NULL, key jsonb NOT NULL, column_name text, "
        "old_value jsonb, row_data jsonb, seal text)"))
    conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {_q(conn, name[:50] + '_batch')} ON {target} (run_id, batch_no)"))
    unsealed = conn.execute(sa.text(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(:t) AND attname = 'seal' "
        "AND NOT attisdropped)"), {"t": target}).scalar()
    if unsealed:  # a journal of an earlier release: its rows are sealed once, as the column is added
        conn.execute(sa.text(f"ALTER TABLE {target} ADD COLUMN seal text"))
        conn.execute(sa.text(f"UPDATE {target} SET seal = {JOURNAL_SEAL}"))
    return target


def seal_batch(batch: Batch) -> None:
    """Seal the journal rows this batch wrote, in its own transaction."""
    batch.conn.execute(sa.text(f"UPDATE {batch.journal} SET seal = {JOURNAL_SEAL} WHERE run_id = :r AND batch_no = :b"),
                       {"r": batch.run_id, "b": batch.batch_no})


def check_journal(conn: sa.Connection, spec: dict, journal: str, run_id: str, batch_no: int) -> None:
    """Refuse (exit 3) a batch's journal whose rows are not as dbsweep sealed them, or that name a
    table or column the plan's merge never changes: undo only touches what the run recorded."""
    rows = conn.execute(sa.text(
        f"SELECT id, table_name, column_name, action, seal IS DISTINCT FROM {JOURNAL_SEAL} AS edited FROM {journal} "
        "WHERE run_id = :r AND batch_no = :b"), {"r": run_id, "b": batch_no}).all()
    columns = {(c["table"], c["column"]) for c in spec["children"]} | {
        (c["table"], c["rename_column"]) for c in spec["children"] if c.get("rename_column")}
    wrong = [r.id for r in rows if r.edited or r.table_name not in spec["tables"]
             or (r.action == "delete") != (r.column_name is None)
             or (r.action != "delete" and (r.table_name, r.column_name) not in columns)]
    if wrong:
        raise GateRefused(f"run {run_id}: journal rows {', '.join(map(str, wrong[:10]))} of batch {batch_no} in "
                          f"{journal} are not as dbsweep recorded them; nothing of that batch was undone")


@dataclass
class Batch:
    """One batch's merge: where it writes its journal, and how many statements it has made."""

    conn: sa.Connection
    spec: dict
    journal: str
    run_id: str
    batch_no: int
    step: int = 0
    maps: int = 0

    def next_step(self) -> int:
        self.step += 1
        return self.step

    def lock_losers(self, table: str, mapping: str) -> None:
        """FOR UPDATE on the losers before anything moves: a concurrent insert of a child under a
        loser (which takes FOR KEY SHARE on it) waits for this batch, then fails on the foreign
        key, instead of landing between the re-point and the delete and failing the batch."""
        key = _q(self.conn, self.spec["tables"][table]["key"])
        self.conn.execute(sa.text(f"SELECT 1 FROM {qualified(self.conn, table)} WHERE {key} IN (SELECT loser FROM {mapping}) "
                                  f"ORDER BY {key} FOR UPDATE"))

    def new_map(self, key_type: str) -> str:
        self.maps += 1
        name = f"dbsweep_merge_map_{self.maps}"
        self.conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        self.conn.execute(sa.text(f"CREATE TEMP TABLE {name} (loser {key_type} PRIMARY KEY, survivor {key_type} NOT NULL) "
                                  "ON COMMIT DROP"))
        return name

    def stamp(self, step: int) -> str:
        return f"{_literal(self.run_id)}, {int(self.batch_no)}, {int(step)}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def group_window(conn: sa.Connection, spec: dict, after: list | None, groups: int) -> tuple[list | None, bool]:
    """The last group key of the next `groups` duplicate groups after `after` (key-set over
    group_by), and whether groups remain after it."""
    t = spec["tables"][spec["table"]]
    cols = ", ".join(_q(conn, c) for c in spec["group_by"])
    row = lambda alias: "(" + ", ".join(f"{alias}{_q(conn, c)}" for c in spec["group_by"]) + ")"  # noqa: E731
    where = [f"{_q(conn, c)} IS NOT NULL" for c in spec["group_by"]]
    params = {"n": groups}
    if spec["where"]:
        where.append(f"({spec['where']})")
    if after is not None:
        bounds = ", ".join(f"CAST(:a{i} AS {t['types'][c]})" for i, c in enumerate(spec["group_by"]))
        where.append(f"{row('')} > ({bounds})")
        params |= {f"a{i}": v for i, v in enumerate(after)}
    found = conn.execute(sa.text(
        f"SELECT {cols} FROM {qualified(conn, spec['table'])} WHERE {' AND '.join(where)} GROUP BY {cols} "
        f"HAVING count(*) > 1 ORDER BY {cols} LIMIT :n"), params).all()
    if not found:
        return None, False
    return list(found[-1]), len(found) == groups


def survivor_order(conn: sa.Connection, spec: dict, alias: str) -> str:
    """The survivor rule as an ORDER BY: first row wins, ties to the lowest key."""
    key = f"{alias}.{_q(conn, spec['tables'][spec['table']]['key'])}"
    if spec["survivor"] == "oldest":
        return f"{alias}.{_q(conn, spec['time_column'])}, {key}"
    if spec["survivor"] == "most_children":
        counts = []
        for child in spec["children"]:
            if child["parent"] != spec["table"]:
                continue
            counts.append(f"(SELECT count(*) FROM {qualified(conn, child['table'])} ch "
                          f"WHERE ch.{_q(conn, child['column'])} = {key}{_only_type(conn, child, 'ch.')})")
        return f"({' + '.join(counts) or '0'}) DESC, {key}"
    return key


def literal_value(value) -> str:
    return str(int(value)) if isinstance(value, int) and not isinstance(value, bool) else _literal(str(value))


def group_filter(conn, spec: dict, alias: str = "") -> str:
    """The rows that take part: every group_by column set, and the policy's `where`."""
    parts = [f"{alias}{_q(conn, c)} IS NOT NULL" for c in spec["group_by"]]
    if spec["where"]:
        parts.append(f"({spec['where']})")
    return " AND ".join(parts)


def losers_sql(conn, spec: dict, window: str = "") -> str:
    """SELECT loser, survivor: every member of a group but the rule's first (`window`: more
    conditions on the members, alias m)."""
    key = _q(conn, spec["tables"][spec["table"]]["key"])
    partition = ", ".join(f"m.{_q(conn, c)}" for c in spec["group_by"])
    return (f"SELECT loser, survivor FROM (SELECT m.{key} AS loser, first_value(m.{key}) OVER (PARTITION BY {partition} "
            f"ORDER BY {survivor_order(conn, spec, 'm')}) AS survivor FROM {qualified(conn, spec['table'])} m "
            f"WHERE {group_filter(conn, spec, 'm.')}{window}) r WHERE loser <> survivor")


def collisions_sql(conn, spec: dict, child: dict, mapping: str) -> str:
    """SELECT loser, survivor among `child`'s rows that would share its unique key once moved by
    `mapping` (a table or subquery of loser, survivor): the one already under the survivor stays,
    else the lowest key."""
    key, fk = _q(conn, spec["tables"][child["table"]]["key"]), _q(conn, child["column"])
    others = [_q(conn, col) for col in child["unique"] if col != child["column"]]
    cols = "".join(f", c.{o}" for o in others)
    not_null = " AND ".join([f"c.{o} IS NOT NULL" for o in others] or ["true"]) + _only_type(conn, child, "c.")
    table = qualified(conn, child["table"])
    return f"""
        SELECT {key} AS loser, first AS survivor FROM (
            SELECT {key}, first_value({key}) OVER (PARTITION BY target{''.join(', ' + o for o in others)}
                                                  ORDER BY moving, {key}) AS first FROM (
                SELECT c.{key}, m.survivor AS target{cols}, 1 AS moving FROM {table} c JOIN {mapping} m
                    ON c.{fk} = m.loser WHERE {not_null}
                UNION ALL
                SELECT c.{key}, c.{fk}{cols}, 0 FROM {table} c WHERE c.{fk} IN (SELECT survivor FROM {mapping} s)
                    AND {not_null}
            ) candidates
        ) ranked WHERE {key} <> first"""


def count_rows(conn, table: str) -> int:
    return conn.execute(sa.text(f"SELECT count(*) FROM {qualified(conn, table)}")).scalar()


def group_counts(conn, spec: dict) -> tuple[int, int, int, int]:
    """Duplicate groups, rows in them, the largest, and the losers (rows the merge removes)."""
    cols = ", ".join(_q(conn, c) for c in spec["group_by"])
    row = conn.execute(sa.text(
        f"SELECT count(*), coalesce(sum(n), 0), coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM "
        f"{qualified(conn, spec['table'])} WHERE {group_filter(conn, spec)} GROUP BY {cols} HAVING count(*) > 1) g")).one()
    groups, rows, largest = (int(v) for v in row)
    return groups, rows, largest, rows - groups


def planned_changes(conn, spec: dict, table: str, mapping: str, out: dict[int, list[int]] | None = None) -> dict[int, list[int]]:
    """What merging the losers of `mapping` into `table` will change, counted read-only at every
    level, as `merge_into` does it: per child (its index in spec["children"]) [rows pointing at a
    loser, rows of those that collide on the child's unique key]. Colliding rows of an
    on_conflict = "merge" child are merged one level down, so their own children count too."""
    out = {} if out is None else out
    for index, child in enumerate(spec["children"]):
        if child["parent"] != table:
            continue
        moving = conn.execute(sa.text(
            f"SELECT count(*) FROM {qualified(conn, child['table'])} c JOIN {mapping} m "
            f"ON c.{_q(conn, child['column'])} = m.loser{_only_type(conn, child, 'c.')}")).scalar()
        collide = 0
        if child.get("unique") and moving:
            collisions = f"({collisions_sql(conn, spec, child, mapping)})"
            collide = conn.execute(sa.text(f"SELECT count(*) FROM {collisions} x")).scalar()
            if collide and child["on_conflict"] == "merge":
                planned_changes(conn, spec, child["table"], collisions, out)
        counted = out.setdefault(index, [0, 0])
        counted[0] += moving
        counted[1] += collide
    return out


def top_losers(conn, spec: dict) -> str:
    """Every loser of the top level with its survivor, as a subquery (the plan's view of the map)."""
    return f"({losers_sql(conn, spec)})"


def pointing_at(conn, child: dict, keys: set) -> int:
    """Rows of `child` that point at any of `keys` (removed rows, for verify)."""
    if not keys:
        return 0
    return conn.execute(sa.text(
        f"SELECT count(*) FROM {qualified(conn, child['table'])} WHERE {_q(conn, child['column'])}::text = ANY(:keys)"
        f"{_only_type(conn, child)}"), {"keys": [str(k) for k in keys]}).scalar()


def _only_type(conn, child: dict, alias: str = "") -> str:
    """A polymorphic child's rows of the parent's type (nothing for a foreign key)."""
    if child["kind"] != "poly":
        return ""
    return f" AND {alias}{_q(conn, child['type_column'])} = {literal_value(child['type_value'])}"


def filled_map(batch: Batch, key_type: str, losers: sa.Select) -> str:
    """A map of the batch filled from a SELECT of (loser, survivor), with statistics to plan by."""
    name = batch.new_map(key_type)
    batch.conn.execute(sa.insert(sa.table(name, sa.column("loser"), sa.column("survivor"))).from_select(
        ["loser", "survivor"], losers))
    batch.conn.execute(sa.text(f"ANALYZE {name}"))
    return name


def top_map(batch: Batch, after: list | None, upto: list) -> str:
    """The map of this batch's groups: every member but the rule's first is a loser."""
    conn, spec = batch.conn, batch.spec
    t = spec["tables"][spec["table"]]
    name = batch.new_map(t["key_type"])
    row = "(" + ", ".join(f"m.{_q(conn, c)}" for c in spec["group_by"]) + ")"
    typed = lambda p: "(" + ", ".join(  # noqa: E731
        f"CAST(:{p}{i} AS {t['types'][c]})" for i, c in enumerate(spec["group_by"])) + ")"
    window = f" AND {row} <= {typed('u')}"
    params = {f"u{i}": v for i, v in enumerate(upto)}
    if after is not None:
        window += f" AND {row} > {typed('a')}"
        params |= {f"a{i}": v for i, v in enumerate(after)}
    conn.execute(sa.text(f"INSERT INTO {name} (loser, survivor) {losers_sql(conn, spec, window)}"), params)
    conn.execute(sa.text(f"ANALYZE {name}"))  # a temporary table has no statistics: without them, a child
    return name                              # table's re-point was planned as a scan of the whole table


def merge_into(batch: Batch, table: str, mapping: str) -> int:
    """Merge the losers of `mapping` into their survivors in `table`: children first (collisions
    one level down), then the pointers, then the losers. Returns the losers deleted."""
    move_children(batch, table, mapping)
    return _delete_losers(batch, table, mapping)


def move_children(batch: Batch, table: str, mapping: str) -> None:
    """Every row pointing at a loser of `mapping` (locked first) moved to its survivor, journaled;
    a move that would collide on the child's unique key is resolved by its `on_conflict`."""
    batch.lock_losers(table, mapping)
    for child in batch.spec["children"]:
        if child["parent"] != table:
            continue
        if child.get("unique"):
            _resolve_collisions(batch, child, mapping)
        _repoint(batch, child, mapping)


def _resolve_collisions(batch: Batch, child: dict, mapping: str) -> None:
    conn = batch.conn
    c_table = child["table"]
    t = batch.spec["tables"][c_table]
    key = _q(conn, t["key"])
    collide = batch.new_map(t["key_type"])
    conn.execute(sa.text(f"INSERT INTO {collide} (loser, survivor) {collisions_sql(conn, batch.spec, child, mapping)}"))
    conn.execute(sa.text(f"ANALYZE {collide}"))
    found = conn.execute(sa.text(f"SELECT count(*) FROM {collide}")).scalar()
    if not found:
        return
    rule = child["on_conflict"]
    if rule == "fail":
        raise GateRefused(f"{found} rows of {c_table} would collide on ({', '.join(child['unique'])}) and on_conflict "
                          "is \"fail\" (collisions appeared since the plan)")
    if rule == "merge":
        merge_into(batch, c_table, collide)
        return
    column = _q(conn, child["rename_column"])
    step = batch.next_step()
    conn.execute(sa.text(f"""
        WITH renamed AS (
            UPDATE {qualified(conn, c_table)} c SET {column} = c.{column} || ' (merged ' || c.{key} || ')'
            FROM {collide} m WHERE c.{key} = m.loser
            RETURNING c.{key} AS k, (SELECT o.{column} FROM {qualified(conn, c_table)} o WHERE o.{key} = c.{key}) AS old)
        INSERT INTO {batch.journal} (run_id, batch_no, step, action, table_name, key, column_name, old_value)
        SELECT {batch.stamp(step)}, 'rename', {_literal(c_table)}, jsonb_build_object({_literal(t['key'])}, k),
               {_literal(child['rename_column'])}, to_jsonb(old) FROM renamed"""))


def _repoint(batch: Batch, child: dict, mapping: str) -> None:
    conn = batch.conn
    t = batch.spec["tables"][child["table"]]
    key, column = _q(conn, t["key"]), _q(conn, child["column"])
    only = _only_type(conn, child, "c.")
    step = batch.next_step()
    conn.execute(sa.text(f"""
        WITH moved AS (
            UPDATE {qualified(conn, child['table'])} c SET {column} = m.survivor FROM {mapping} m
            WHERE c.{column} = m.loser{only} RETURNING c.{key} AS k, m.loser AS old)
        INSERT INTO {batch.journal} (run_id, batch_no, step, action, table_name, key, column_name, old_value)
        SELECT {batch.stamp(step)}, 'repoint', {_literal(child['table'])}, jsonb_build_object({_literal(t['key'])}, k),
               {_literal(child['column'])}, to_jsonb(old) FROM moved"""))


def _delete_losers(batch: Batch, table: str, mapping: str) -> int:
    conn = batch.conn
    t = batch.spec["tables"][table]
    key = _q(conn, t["key"])
    step = batch.next_step()
    return conn.execute(sa.text(f"""
        WITH gone AS (DELETE FROM {qualified(conn, table)} d USING {mapping} m WHERE d.{key} = m.loser RETURNING d.*)
        INSERT INTO {batch.journal} (run_id, batch_no, step, action, table_name, key, row_data)
        SELECT {batch.stamp(step)}, 'delete', {_literal(table)}, jsonb_build_object({_literal(t['key'])}, gone.{key}),
               to_jsonb(gone) FROM gone""")).rowcount


def undo_batch(conn: sa.Connection, spec: dict, journal: str, run_id: str, batch_no: int) -> tuple[int, int]:
    """Replay one batch's journal backwards: deleted rows re-inserted (a row whose key exists again
    is left alone), pointers and names set back. Returns (rows re-inserted, pointers restored)."""
    check_journal(conn, spec, journal, run_id, batch_no)
    inserted = restored = 0
    steps = conn.execute(sa.text(
        f"SELECT DISTINCT step, action, table_name, column_name FROM {journal} WHERE run_id = :r AND batch_no = :b "
        "ORDER BY step DESC"), {"r": run_id, "b": batch_no}).all()
    for step in steps:
        t = spec["tables"][step.table_name]
        target, key = qualified(conn, step.table_name), _q(conn, t["key"])
        params = {"r": run_id, "b": batch_no, "s": step.step}
        if step.action == "delete":
            cols = ", ".join(_q(conn, c) for c in t["insertable"])
            inserted += conn.execute(sa.text(f"""
                INSERT INTO {target} ({cols}) OVERRIDING SYSTEM VALUE
                SELECT {', '.join(f'r.{_q(conn, c)}' for c in t['insertable'])}
                FROM {journal} j CROSS JOIN LATERAL jsonb_populate_record(NULL::{target}, j.row_data) r
                WHERE j.run_id = :r AND j.batch_no = :b AND j.step = :s
                ON CONFLICT DO NOTHING"""), params).rowcount
        else:
            column = _q(conn, step.column_name)
            restored += conn.execute(sa.text(f"""
                UPDATE {target} c SET {column} = r.{column}
                FROM {journal} j CROSS JOIN LATERAL jsonb_populate_record(
                    NULL::{target}, j.key || jsonb_build_object(j.column_name, j.old_value)) r
                WHERE j.run_id = :r AND j.batch_no = :b AND j.step = :s AND j.column_name = :c
                  AND c.{key} = r.{key}"""), {**params, "c": step.column_name}).rowcount
    return inserted, restored


def journal_counts(conn: sa.Connection, journal: str, run_ids: list[str]) -> dict[tuple[str, str], list]:
    """(action, table) → [changes, keys] of the journal of these runs, not yet restored."""
    if not run_ids:
        return {}
    rows = conn.execute(sa.text(
        f"SELECT action, table_name, count(*), jsonb_agg(key) FROM {journal} WHERE run_id = ANY(:runs) "
        "GROUP BY 1, 2"), {"runs": run_ids}).all()
    return {(r[0], r[1]): [r[2], r[3]] for r in rows}


def journal_by_column(conn: sa.Connection, journal: str, run_ids: list[str]) -> dict[str, int]:
    """Changes in the journal of these runs per "action table column" (column empty for deletes)."""
    if not run_ids:
        return {}
    rows = conn.execute(sa.text(
        f"SELECT action, table_name, coalesce(column_name, ''), count(*) FROM {journal} WHERE run_id = ANY(:runs) "
        "GROUP BY 1, 2, 3"), {"runs": run_ids}).all()
    return {f"{r[0]} {r[1]} {r[2]}": int(r[3]) for r in rows}
