"""Kind `dedupe`: remove duplicate rows by a natural key online, keep the row a rule names, and add
the unique constraint that stops them coming back (seed 003: six ETL tables, 36.5M duplicates,
because an upsert had no conflict target).

Per table, one of two strategies (chosen from the profile, or forced):
- `in_place`: batches walk the primary key and delete each row that has a preceding row (by the
  rule) of the same natural key, archived to `<table>__archive` in the batch's own transaction;
  a final pass takes rows that arrived after the plan; then the unique index is built
  CONCURRENTLY and attached as the constraint.
- `rebuild` (PostgreSQL, most rows duplicates): the kept rows are copied into a shadow table while
  a trigger logs concurrent writes, which are replayed; a short lock swaps the tables, and the old
  one stays as the backup (`dbsweep.dialects.pg_rebuild`).
Either way an index on (natural key, rule's columns) is built CONCURRENTLY first if none exists, so
finding a key's kept row is one index probe; dbsweep drops it again when it made it."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import Field, model_validator

from .. import inbound
from ..archive import make_archive
from ..catalog import column, has_table, primary_key, reflect_table, time_column
from ..dialects import Dialect, pg_merge
from ..durations import parse_duration
from ..errors import BadInput
from ..keys import to_json
from ..names import MAX_IDENTIFIER_BYTES, derived
from ..plan import PhasePlan, Step
from ..phase_config import Duration, PhaseBase, ServerTimeout, Strict, TableName
from ..walkers import Walker
from .base import Kind
from .children import canonical, journal_name, table_facts
from .children import children as find_children
from .common import PlanParts
from .dedupe_in_place import InPlaceWalker, Repointing, StageSink, guard_name
from .dedupe_rebuild import WORD, DedupeRebuildWalker, rebuild_names, removed
from .rebuild import DropBackupWalker, Recorded, check_backups, kept_backups, rebuild_blockers, restore_rebuilds
from .dedupe_rule import AUTO, DROP_BACKUP, IN_PLACE, REBUILD, duplicate_map, is_duplicate, precedes, rule_order, same_key, selection

NONE = "none"


class TableRule(Strict):
    """One table: what makes two rows the same, and which of them stays."""

    table: TableName
    natural_key: list[str] = Field(min_length=1)
    keep: Literal["oldest", "newest", "lowest_key"] = "oldest"
    time_column: str | None = None  # orders "oldest" and "newest"; ties go to the lowest primary key
    nulls: Literal["distinct", "equal"] = "distinct"  # SQL's rule, or NULL parts count as equal
    constraint: str | None = None  # the unique constraint added afterwards; derived when not given
    strategy: Literal["auto", "in_place", "rebuild"] = AUTO
    # a row another table points at (a foreign key): the gate refuses, or its children move to the kept row
    referenced: Literal["refuse", "repoint"] = "refuse"
    on_conflict: dict[str, Literal["merge", "rename", "fail"]] = {}  # a moved child's unique-key collision

    @model_validator(mode="after")
    def _rule(self) -> TableRule:
        if self.keep != "lowest_key" and self.time_column is None:
            raise ValueError(f"keep = {self.keep!r} needs time_column (or keep = \"lowest_key\")")
        if self.keep == "lowest_key" and self.time_column is not None:
            raise ValueError("keep = \"lowest_key\" orders by the primary key alone: leave time_column out")
        if len(set(self.natural_key)) != len(self.natural_key):
            raise ValueError(f"natural_key names a column twice: {self.natural_key}")
        if self.constraint is not None and len(self.constraint.encode()) > MAX_IDENTIFIER_BYTES:
            raise ValueError(f"constraint name {self.constraint!r} is longer than {MAX_IDENTIFIER_BYTES} bytes")
        return self


class Config(PhaseBase):
    kind: Literal["dedupe"]
    tables: list[TableRule] = Field(min_length=1)
    archive: str = "table"
    archive_modes = ("table",)
    archive_why = "a dedupe keeps every row it removes in <table>__archive (verify reads them back)"
    rebuild_above: float = Field(default=0.5, ge=0, le=1)  # auto: rebuild when more of the table is duplicates
    keep_backup: Duration = "7 days"  # a rebuild's old table, kept for restore; a later run drops it
    swap_lock_timeout: ServerTimeout = "500 ms"  # the longest a rebuild's swap makes writers wait

    @model_validator(mode="after")
    def _tables_once(self) -> Config:
        names = [rule.table for rule in self.tables]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"tables: {twice[0]!r} is listed twice")
        return self


def _once_each(conn, cfg: Config) -> dict[str, sa.Table]:
    """The rules' tables as the catalog resolves them: two spellings of one table are refused."""
    found: dict[str, str] = {}
    tables = {}
    for rule in cfg.tables:
        table = reflect_table(conn, rule.table)
        name = canonical(conn, table)
        if name in found:
            raise BadInput(f"key 'tables': {rule.table!r} and {found[name]!r} are the same table ({name})")
        found[name], tables[rule.table] = rule.table, table
    return tables


def _references(conn, dialect: Dialect, table: sa.Table, rule: TableRule, spec: dict) -> list[str]:
    """Foreign keys into the table (dbsweep.inbound): duplicates they point at are blockers, and
    each key a guard of every batch; unless referenced = "repoint" moves those rows to the kept row
    (merge's journaled re-point, the duplicates locked first, so a child written meanwhile waits
    and is moved or refused), when collisions the policy leaves at "fail" are the blockers."""
    keys = inbound.keys_into(conn, dialect, table)
    spec["guard"] = [k.spec() for k in keys] if rule.referenced == "refuse" else []
    if rule.referenced == "refuse" or not keys:
        doomed = is_duplicate(table, table.alias("dbsweep_k"), spec)
        return inbound.blockers(conn, table, doomed, keys, "duplicate rows",
                                lambda key: "set referenced = \"repoint\" to move them to the row that stays")
    if dialect.name != "postgresql":
        raise BadInput(f"key 'referenced': \"repoint\" needs PostgreSQL (its journal keeps rows as jsonb), not {dialect.name}")
    if len(spec["key"]) != 1:
        raise BadInput(f"key 'referenced': \"repoint\" needs a single-column primary key on '{table.fullname}'")
    root = canonical(conn, table)
    kids = find_children(conn, dialect, table, rule.on_conflict, [])
    repoint = {"table": root, "key": spec["key"], "children": kids, "journal": journal_name(table.name, "__dedupe_journal"),
               "tables": table_facts(conn, [root, *dict.fromkeys(c["table"] for c in kids)])}
    spec["repoint"] = repoint
    mapping = duplicate_map(table, spec).compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    planned = pg_merge.planned_changes(conn, repoint, root, f"({mapping})")
    found = []
    for index, child in enumerate(kids):
        moving, collisions = planned.get(index, [0, 0])
        spec.setdefault("moves", []).append({"table": child["table"], "column": child["column"], "rows": moving,
                                             "collisions": collisions, "on_conflict": child["on_conflict"]})
        if collisions and child["on_conflict"] == "fail":
            found.append(f"{collisions:,} rows of {child['table']} would collide on ({', '.join(child['unique'])}) once "
                         f"moved to the kept row; set on_conflict for it to \"merge\" or \"rename\"")
    return found


# discovery -----------------------------------------------------------------------------------
def _unique_on(conn: sa.Connection, dialect: Dialect, table: sa.Table, columns: list[str]) -> str:
    """The name of a primary key, unique constraint or unique index whose columns are among
    `columns` (then those are unique already), else "none"."""
    wanted = set(columns)
    found = [ix for ix in dialect.indexes(conn, table) if ix["unique"] and not ix["partial"]
             and None not in ix["columns"] and set(ix["columns"]) <= wanted]
    for what, named in (("primary key", lambda ix: ix["primary"]), ("constraint", lambda ix: ix["constraint"]),
                        ("unique index", lambda ix: True)):
        for ix in found:
            if named(ix):
                return f"{what} {ix['name']}".strip()
    return NONE


def _index_serving(conn: sa.Connection, dialect: Dialect, table: sa.Table, columns: list[str],
                   order: list[tuple[str, bool]]) -> str | None:
    """An index whose leading columns are the natural key then the rule's order (so a key's kept
    row is the first entry of its group), else None."""
    wanted = columns + [name for name, _ in order]
    for ix in dialect.indexes(conn, table):
        if ix["columns"][:len(wanted)] != wanted or ix["partial"]:
            continue
        if all((name in ix["descending"]) == desc for name, desc in order):
            return ix["name"]
    return None


def _profile(conn: sa.Connection, table: sa.Table, rule: TableRule) -> dict:
    """Rows, distinct keys, duplicates, the largest group, and the duplicate groups' rows whose
    time is NULL (the rule cannot order them)."""
    keys = [table.c[c] for c in rule.natural_key]
    when = rule.time_column
    null_time = sa.case((table.c[when].is_(None), 1), else_=0) if when else sa.literal(0)
    grouped = sa.select(*keys, sa.func.count().label("n"), sa.func.sum(null_time).label("null_times")).group_by(*keys)
    if rule.nulls == "distinct":  # a key with a NULL part equals no other: each such row is its own key
        grouped = grouped.where(*(k.is_not(None) for k in keys))
    groups = grouped.subquery()
    found = conn.execute(sa.select(
        sa.func.count(), sa.func.coalesce(sa.func.sum(groups.c.n), 0), sa.func.coalesce(sa.func.max(groups.c.n), 0),
        sa.func.coalesce(sa.func.sum(sa.case((groups.c.n > 1, groups.c.null_times), else_=0)), 0),
    ).select_from(groups)).one()
    rows_total = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
    grouped_keys, grouped_rows = int(found[0]), int(found[1])
    lone = rows_total - grouped_rows  # rows with a NULL key part, under nulls = "distinct"
    return {"rows_total": rows_total, "distinct_keys": grouped_keys + lone, "rows_selected": grouped_rows - grouped_keys,
            "largest_group": max(int(found[2]), 1 if lone else 0), "ambiguous_rows": int(found[3])}


def _strategy(rule: TableRule, dialect: Dialect, fraction: float, threshold: float,
              blockers: list[str] | None) -> tuple[str, str]:
    """(strategy, why), from the profile, or as forced by the policy."""
    if rule.strategy == REBUILD:
        if dialect.name != "postgresql":
            raise BadInput(f"table '{rule.table}': strategy = \"rebuild\" needs PostgreSQL, not {dialect.name}")
        if blockers:
            raise BadInput(f"table '{rule.table}': strategy = \"rebuild\" cannot carry over {blockers[0]}; "
                           "use \"in_place\" or \"auto\"")
        return REBUILD, "forced by the policy"
    if rule.strategy == IN_PLACE:
        return IN_PLACE, "forced by the policy"
    if fraction <= threshold:
        return IN_PLACE, f"duplicates are {fraction:.1%} of the table (rebuild above {threshold:.0%})"
    if blockers is None:
        return IN_PLACE, f"rebuild needs PostgreSQL, not {dialect.name}"
    if blockers:
        return IN_PLACE, f"rebuild would lose {blockers[0]}"
    return REBUILD, f"duplicates are {fraction:.1%} of the table: copying what stays writes less than deleting"


def _backup_rows(conn, cfg: Config, table: sa.Table, spec: dict, now: datetime) -> tuple[list[Step], list[dict]]:
    """Backups past keep_backup become steps that drop them (shown in the plan, never silent);
    younger ones are listed with the moment they become due."""
    steps, rows = [], []
    for backup in kept_backups(conn, table, WORD, parse_duration(cfg.keep_backup), now, spec, spec["key"]):
        row = {"table": backup.qualified, "rows_total": backup.rows, "distinct_keys": None, "rows_selected": 0,
               "largest_group": 0, "ambiguous_rows": 0, "fraction_selected": 0.0, "already_unique": NONE,
               "constraint": spec["constraint"], "blockers": NONE, "why": backup.why}
        if backup.step is not None:
            rows.append({**row, "strategy": "drop backup", "detail": f"drop backup {backup.name}",
                         "why": backup.why.replace("keep_backup", f"keep_backup {cfg.keep_backup}")})
            steps.append(backup.step)
        else:
            rows.append({**row, "strategy": "keep backup", "due": backup.due.isoformat(),
                         "detail": f"keep backup {backup.name}"})
    return steps, rows


def build_plan(cfg: Config, conn: sa.Connection, dialect: Dialect, now: datetime, window=None) -> PlanParts:
    steps, profile = [], []
    tables = _once_each(conn, cfg)
    for rule in cfg.tables:
        table = tables[rule.table]
        for name in rule.natural_key:
            column(table, name, "natural_key")
        if rule.time_column is not None:
            time_column(table, rule.time_column, use=f"keep = \"{rule.keep}\" orders rows by it")
        key = [c.name for c in primary_key(table)]
        if not key:
            raise BadInput(f"table '{table.fullname}' has no primary key: dedupe needs one to tell duplicates apart "
                           "and to break ties")
        if rule.nulls == "equal" and not dialect.nulls_not_distinct:
            raise BadInput(f"table '{rule.table}': nulls = \"equal\" cannot be enforced on {dialect.name}")
        # PostgreSQL's own name for an unnamed UNIQUE (table_columns_key), kept within 63 bytes
        constraint = rule.constraint or derived(f"{table.name}_{'_'.join(rule.natural_key)}", "_key")
        spec = {"natural_key": rule.natural_key, "key": key, "keep": rule.keep, "time_column": rule.time_column,
                "nulls": rule.nulls, "constraint": constraint}
        order = rule_order(spec)
        already = _unique_on(conn, dialect, table, rule.natural_key)
        if already == NONE and has_table(conn, constraint, table.schema):
            raise BadInput(f"table '{rule.table}': constraint name '{constraint}' is taken by a table")
        dropping, kept_backups = _backup_rows(conn, cfg, table, {**spec, "key": key}, now)
        steps += dropping
        profile += kept_backups
        if already == f"constraint {constraint}" and (dropping or kept_backups):
            continue  # deduplicated by an earlier run of this phase: only its backups are left to look after
        referenced = _references(conn, dialect, table, rule, spec)
        counts = _profile(conn, table, rule)
        fraction = counts["rows_selected"] / counts["rows_total"] if counts["rows_total"] else 0.0
        blockers = rebuild_blockers(conn, dialect, table)
        strategy, why = _strategy(rule, dialect, fraction, cfg.rebuild_above, blockers)
        helper = _index_serving(conn, dialect, table, rule.natural_key, order)
        bytes_now = dialect.table_bytes(conn, table)
        keys = [table.c[k] for k in key]
        bounds = conn.execute(sa.select(sa.func.min(keys[0]), sa.func.max(keys[0]))).one() if len(key) == 1 else None
        if len(key) == 1:
            first, last = (None, None) if bounds[0] is None else (to_json([bounds[0]]), to_json([bounds[1]]))
        else:
            first = to_json(conn.execute(sa.select(*keys).order_by(*keys).limit(1)).first())
            last = to_json(conn.execute(sa.select(*keys).order_by(*[k.desc() for k in keys]).limit(1)).first())
        spec |= {"strategy": strategy, "why": why, "helper_index": None if helper else derived(table.name, "__dedupe_ix"),
                 "rows_total": counts["rows_total"], "distinct_keys": counts["distinct_keys"], "bytes_before": bytes_now,
                 "lock_timeout_swap_s": cfg.seconds("swap_lock_timeout"),
                 "plan_last_key": last}  # rows after it arrived after the plan: the final pass's
        if strategy == REBUILD:
            if spec.get("repoint"):
                raise BadInput(f"table '{rule.table}': referenced = \"repoint\" moves rows batch by batch: use "
                               "strategy \"in_place\" or \"auto\"")
            spec["names"] = rebuild_names(conn, table, now)
        steps.append(Step(table=table.fullname, walk=strategy, key=key, first_key=first, last_key=last,
                          rows_selected=counts["rows_selected"], batch_size=cfg.start_batch_size, spec=spec))
        estimate = int(bytes_now * counts["distinct_keys"] / counts["rows_total"]) if bytes_now and counts["rows_total"] else bytes_now
        profile.append({
            "table": table.fullname, "strategy": strategy, "why": why, **counts,
            "fraction_selected": round(fraction, 6), "bytes_now": bytes_now, "est_bytes_after": estimate,
            "already_unique": already, "constraint": constraint,
            "helper_index": spec["helper_index"] or f"uses {helper}",
            "writes": spec["names"]["backup"] if strategy == REBUILD else derived(table.name, "__archive"),
            "detail": f"{strategy}: {why}; largest group {counts['largest_group']:,}" + "".join(
                f"; {m['rows']:,} rows of {m['table']} ({m['column']}) move to the kept row, {m['collisions']:,} "
                f"collide → {m['on_conflict']}" for m in spec.get("moves", [])),
            # bytes it removes, as every kind's est_bytes means (the size after is est_bytes_after)
            "est_bytes": bytes_now - estimate if bytes_now is not None and estimate is not None else None,
            "blockers": "; ".join(referenced) or NONE,
        })
    rows = sum(p["rows_selected"] for p in profile)
    return PlanParts(steps=steps, profile=profile, expect={
        "max_rows": cfg.expect.max_rows if cfg.expect.max_rows is not None else max(rows, 0),
        "min_rows": cfg.expect.min_rows,
        "max_fraction": cfg.expect.max_fraction if cfg.expect.max_fraction is not None else 1.0,
    })


def walker(ctx, table: sa.Table, step: Step, cursor: dict) -> Walker:
    if step.walk == DROP_BACKUP:
        return DropBackupWalker(table, step, Recorded())
    archive = make_archive("table", ctx.engine, ctx.dialect, table, ctx.archive_dir)
    if step.spec.get("repoint"):
        archive = Repointing(archive, table, step.spec)
    archive = StageSink(archive)
    if step.walk == REBUILD:
        return DedupeRebuildWalker(ctx, table, step, StageSink(Recorded()), cursor)
    return InPlaceWalker(ctx, table, step, archive, cursor, selection(table, step))


# verify and undo ------------------------------------------------------------------------------
def _removed_rows(conn, table: sa.Table, step: Step, run_ids: list[str]) -> sa.FromClause | None:
    """The rows the plan's runs removed from `table`: their archive rows, or the rows of a
    rebuild's backup that the rule made duplicates and that are gone from the table."""
    from ..archive import archive_table_for, open_archive

    if step.walk == DROP_BACKUP:
        return None
    if step.walk == REBUILD:
        name = step.spec["names"]["backup"]
        if not has_table(conn, name, table.schema):
            return None
        backup = reflect_table(conn, f"{table.schema}.{name}" if table.schema else name)
        row, earlier = backup.alias("removed"), backup.alias("earlier")
        # gone from the table, and a duplicate in the backup: a row a writer deleted after the swap
        # is not one the rule removed
        return sa.select(row).where(
            ~sa.exists(sa.select(sa.literal(1)).select_from(table).where(*(table.c[k] == row.c[k] for k in step.key))),
            is_duplicate(row, earlier, step.spec)).subquery("removed_rows")
    archive = archive_table_for(table)
    if not has_table(conn, archive.name, archive.schema):
        return None
    archive = open_archive(conn, archive.fullname, to_restore=False)
    return sa.select(archive.rows).where(archive.runs_rows(run_ids)).subquery("removed_rows")


def verify(conn: sa.Connection, dialect: Dialect, plan: PhasePlan) -> list[dict]:
    """Per table: no duplicate keys; the constraint there and valid; every removed row has a row of
    its key that the rule puts before it (the kept row is the rule's); no key lost; the bytes."""
    from ..ledger import Ledger

    ledger = Ledger(conn.engine)
    run_ids = ledger.run_ids_for_plan(plan.plan_id)
    rows = []
    for step in plan.steps:
        spec = step.spec
        table = reflect_table(conn, step.table)
        keys = [table.c[c] for c in spec["natural_key"]]
        grouped = sa.select(*keys).group_by(*keys).having(sa.func.count() > 1)
        if spec["nulls"] == "distinct":
            grouped = grouped.where(*(k.is_not(None) for k in keys))
        duplicates = conn.execute(sa.select(sa.func.count()).select_from(grouped.subquery())).scalar()
        state = dialect.index_state(conn, table, spec["constraint"])
        wrong = lost = 0
        removed = _removed_rows(conn, table, step, run_ids)
        if removed is not None:
            survivor = sa.select(sa.literal(1)).select_from(table).where(same_key(table, removed, spec))
            wrong = conn.execute(sa.select(sa.func.count()).select_from(removed).where(
                ~sa.exists(survivor.where(precedes(table, removed, rule_order(spec)))))).scalar()
            lost = conn.execute(sa.select(sa.func.count()).select_from(removed).where(~sa.exists(survivor))).scalar()
        rows_now = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
        rows.append({"table": step.table, "strategy": step.walk, "duplicate_keys": duplicates, "constraint": state,
                     "wrong_survivors": wrong, "keys_lost": lost, "rows_before": spec.get("rows_total"),
                     "distinct_keys_before": spec.get("distinct_keys"), "rows_now": rows_now,
                     "bytes_before": spec.get("bytes_before"), "bytes_now": dialect.table_bytes(conn, table)})
    return rows


def restore(engine: sa.Engine, ledger, run, plan: PhasePlan, archive_dir=None):
    """Drop the constraint the run added (saying so), then put back every removed row: from the
    archive (in_place) or from the backup (rebuild), one transaction per batch; an unfinished
    rebuild's shadow, log and trigger are dropped instead. Safe to run twice."""
    from ..archive import open_archive
    from ..dialects import dialect_for
    from ..undo import RestoreReport, insert_from_archive

    dialect = dialect_for(engine)
    said, restored, moved_back = [], 0, 0
    batches = list(reversed(ledger.archived_batches(run.run_id)))
    dropped = [json.loads(b.archive)["dropped_backup"] for b in batches if '"dropped_backup"' in b.archive]
    if dropped:
        said.append(f"backups dropped after keep_backup stay dropped ({', '.join(dropped)})")
        batches = [b for b in batches if '"dropped_backup"' not in b.archive]
    with engine.connect() as conn:  # refused before anything changes
        for step in (s for s in plan.steps if s.spec.get("repoint")):
            repoint = step.spec["repoint"]
            if has_table(conn, repoint["journal"], reflect_table(conn, step.table).schema):
                journal = pg_merge.journal_table(conn, repoint["table"], repoint["journal"])
                for batch in batches:
                    pg_merge.check_journal(conn, repoint, journal, run.run_id, batch.batch_no)
    check_backups(engine, ledger, run)
    for step in (s for s in plan.steps if s.walk != DROP_BACKUP):
        with engine.begin() as conn:
            table = reflect_table(conn, step.table)
            if dialect.index_state(conn, table, step.spec["constraint"]) != "missing":
                dialect.drop_unique(conn, table, step.spec["constraint"])
                said.append(f"dropped constraint {step.spec['constraint']} on {step.table} first")
        if step.walk != REBUILD:
            with engine.begin() as conn:
                dialect.drop_key_guard(conn, table, guard_name(table))
        helper = step.spec.get("helper_index")
        if helper and step.walk != REBUILD:
            with engine.connect() as conn:
                left = dialect.index_state(conn, table, helper) != "missing"
            if left:
                dialect.drop_index(engine, table, helper)
    rebuilt = restore_rebuilds(engine, ledger, run, plan, removed)
    said += rebuilt.said
    restored += rebuilt.rows
    steps = {step.table: step for step in plan.steps}
    for batch in (b for b in batches if not b.archive.startswith("{")):
        with engine.begin() as conn:
            table = reflect_table(conn, batch.table_name)
            step = steps[batch.table_name]
            keys = [table.c[k] for k in step.key]
            restored += insert_from_archive(conn, table, keys, open_archive(conn, batch.archive), run.run_id,
                                            batch.batch_no)
            repoint = step.spec.get("repoint")
            if repoint and has_table(conn, repoint["journal"], table.schema):  # children back after
                journal = pg_merge.journal_table(conn, repoint["table"], repoint["journal"])  # the rows they point at
                moved_back += pg_merge.undo_batch(conn, repoint, journal, run.run_id, batch.batch_no)[1]
            ledger.mark_restored(conn, run.run_id, batch.batch_no)
    said.append(f"put back {restored:,} rows" + (f", and {moved_back:,} rows pointing at them" if moved_back else ""))
    return RestoreReport(run.run_id, plan.phase, len(batches), run.rows_done, restored, run.rows_done - restored,
                         detail="; ".join(said))


class Dedupe(Kind):
    name = "dedupe"
    Config = Config

    build_plan = staticmethod(build_plan)
    selection = staticmethod(selection)
    verify = staticmethod(verify)
    walker = staticmethod(walker)
    restore = staticmethod(restore)

    def tables(self, cfg) -> list[str]:
        return [rule.table for rule in cfg.tables]
