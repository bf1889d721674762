"""Kind `merge`: consolidate duplicate parent rows into one survivor per group, re-point every
child, and undo from a journal (seed 004: applications with several root folders).

Groups are rows of `table` with equal `group_by` values (and `where`); the `survivor` rule names
the row that stays. Children are read from the catalog (every foreign key into the table, its
self-reference included) plus the polymorphic pairs the policy lists. A child whose unique
constraint would collide after the move is merged the same way one level down (`on_conflict =
"merge"`, recursively: two `Documents` folders become one and their documents move), renamed, or
makes the gate refuse. Batches of groups, each one transaction with its journal rows and ledger
row; the SQL is `dbsweep.dialects.pg_merge` (PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import Field, model_validator

from ..archive import Change
from ..catalog import column, has_table, reflect_table, time_column
from ..dialects import Dialect, pg_merge
from ..errors import StoppedEarly
from ..names import MAX_IDENTIFIER_BYTES
from ..plan import PhasePlan, Step
from ..phase_config import PhaseBase, Strict, TableName, Where
from ..predicate import check_where, checked_where
from ..walkers import StagedWalker
from .base import DryRunLine, Kind
from .children import canonical, journal_name, table_facts
from .children import children as find_children
from .common import PlanParts


class Polymorphic(Strict):
    """A child that points with a type column and an id column (not a foreign key)."""

    table: TableName
    type_column: str
    id_column: str
    type_value: int | str
    parent: TableName | None = None  # the table its ids point into; default the phase's table


class UniqueAfter(Strict):
    """The unique index that stops duplicates coming back, built CONCURRENTLY after the merge."""

    name: str
    columns: list[str] = Field(min_length=1)
    where: Where | None = None

    @model_validator(mode="after")
    def _fits(self) -> UniqueAfter:
        if len(self.name.encode()) > MAX_IDENTIFIER_BYTES:
            raise ValueError(f"constraint name {self.name!r} is longer than {MAX_IDENTIFIER_BYTES} bytes")
        return self


class Config(PhaseBase):
    kind: Literal["merge"]
    table: TableName
    group_by: list[str] = Field(min_length=1)
    where: Where | None = None
    survivor: Literal["oldest", "lowest_key", "most_children"] = "oldest"
    time_column: str | None = None
    polymorphic: list[Polymorphic] = []
    on_conflict: dict[str, Literal["merge", "rename", "fail"]] = {}  # child table → rule; default "fail"
    children_complete: bool = False  # the gate refuses a table that looks like an unlisted polymorphic child
    max_groups: int | None = Field(default=None, ge=0)  # the gate refuses more duplicate groups than this
    constraint: UniqueAfter | None = None
    archive: str = "table"  # the journal, `<table>__merge_journal`
    archive_modes = ("table",)
    archive_why = "a merge journals every change in <table>__merge_journal"

    @model_validator(mode="after")
    def _rule(self) -> Config:
        if self.survivor == "oldest" and self.time_column is None:
            raise ValueError("survivor = \"oldest\" needs time_column")
        return self


def build_plan(cfg: Config, conn: sa.Connection, dialect: Dialect, now: datetime, window=None) -> PlanParts:
    table = reflect_table(conn, cfg.table)
    for name in cfg.group_by:
        column(table, name, "group_by")
    if cfg.time_column:
        time_column(table, cfg.time_column, use=f"survivor = \"{cfg.survivor}\" orders rows by it")
    where = checked_where(cfg.where, table, dialect.name)["where"] if cfg.where else None
    children = find_children(conn, dialect, table, cfg.on_conflict, cfg.polymorphic)
    spec = {"table": canonical(conn, table), "group_by": cfg.group_by, "where": where, "where_dialect": dialect.name,
            "survivor": cfg.survivor, "time_column": cfg.time_column, "children": children,
            "journal": journal_name(table.fullname),
            "tables": table_facts(conn, [canonical(conn, table), *dict.fromkeys(c["table"] for c in children)])}
    if cfg.constraint is not None:
        for name in cfg.constraint.columns:
            column(table, name, "constraint.columns")
        spec["constraint"] = {"name": cfg.constraint.name, "columns": cfg.constraint.columns,
                              "where": checked_where(cfg.constraint.where, table, dialect.name)["where"]
                              if cfg.constraint.where else None}
    groups, in_groups, largest, losers = pg_merge.group_counts(conn, spec)
    known = {f"{c['table'].rpartition('.')[2]}:{c['column']}" for c in children if c["kind"] == "poly"}
    unlisted = pg_merge.plausible_polymorphic(conn, known)
    profile = [{"table": spec["table"], "role": "groups", "rows_total": pg_merge.count_rows(conn, spec["table"]),
                "groups": groups, "rows_in_groups": in_groups, "largest_group": largest, "rows_selected": losers, "moving": 0,
                "repointed": 0,
                "collisions": 0, "on_conflict": "", "unresolved": 0,
                "unlisted_children": "; ".join(unlisted) if cfg.children_complete and unlisted else "none",
                "max_groups": cfg.max_groups if cfg.max_groups is not None else groups,
                "writes": spec["journal"],
                "detail": f"{groups:,} groups (largest {largest:,}): {losers:,} rows merged into their survivor"}]
    planned = pg_merge.planned_changes(conn, spec, spec["table"], pg_merge.top_losers(conn, spec))
    for index, child in enumerate(children):
        moving, collisions = planned.get(index, [0, 0])
        rule = child["on_conflict"]
        repointed = moving - collisions if rule == "merge" else moving
        if not child["unique"]:
            outcome = f"{repointed:,} re-pointed (no unique key to collide on)"
        else:
            outcome = f"{repointed:,} re-pointed, {collisions:,} collide → {rule}"
        profile.append({"table": child["table"], "role": f"{child['kind']} child of {child['parent']} ({child['column']})",
                        "rows_total": pg_merge.count_rows(conn, child["table"]), "groups": 0, "rows_in_groups": 0, "largest_group": 0,
                        "rows_selected": 0, "moving": moving, "repointed": repointed, "collisions": collisions,
                        "on_conflict": rule, "unresolved": collisions if rule == "fail" else 0,
                        "unlisted_children": "none", "max_groups": 0, "writes": spec["journal"],
                        "detail": f"{child['kind']} child ({child['column']}): {moving:,} point at a merged row, at every "
                                  f"level: {outcome}"})
    spec["rows_before"] = {row["table"]: row["rows_total"] for row in profile}
    spec["planned"] = planned_journal(spec["table"], losers, children, profile[1:])
    step = Step(table=spec["table"], walk="merge", key=cfg.group_by, rows_selected=losers,
                batch_size=cfg.batch_size or 100, spec=spec)
    return PlanParts(steps=[step], profile=profile, expect={
        "max_rows": cfg.expect.max_rows if cfg.expect.max_rows is not None else losers, "min_rows": cfg.expect.min_rows})


def planned_journal(root: str, losers: int, children: list[dict], rows: list[dict]) -> dict[str, int]:
    """What the journal will hold once the run is done, per "action table column" (column empty
    for deletes): the plan's counts at every level, summed over children sharing a table."""
    planned: dict[str, int] = {f"delete {root} ": losers}
    for child, row in zip(children, rows):
        moves = {"repoint": row["repointed"], "rename": row["collisions"] if child["on_conflict"] == "rename" else 0}
        for action, rows_moved in moves.items():
            name = f"{action} {child['table']} {child['rename_column'] if action == 'rename' else child['column']}"
            planned[name] = planned.get(name, 0) + rows_moved
        if child["on_conflict"] == "merge":
            name = f"delete {child['table']} "
            planned[name] = planned.get(name, 0) + row["collisions"]
    return {name: rows for name, rows in planned.items() if rows}


def selection(table: sa.Table, step: Step) -> sa.ColumnElement:
    return sa.true()  # a merge walks groups, not a selection of rows


MERGE_PASSES = 3  # passes over the groups before the constraint stops waiting for writers to stop


class JournalSink(Change):
    """What the ledger records of a merge batch: the journal holding its changes."""

    def __init__(self, journal: str):
        self.journal = journal

    def begin_batch(self, run_id: str, batch_no: int) -> None:
        self.run_id, self.batch_no = run_id, batch_no


class MergeWalker(StagedWalker):
    stages = ("merge", "constraint")
    outside = frozenset({"constraint"})

    def __init__(self, ctx, table, step, cursor):
        super().__init__(ctx, table, step, JournalSink(step.spec["journal"]), cursor)
        self.groups = 0
        self.spec = dict(step.spec)
        if self.spec["where"]:  # the plan is read back from outside: its SQL is checked again
            self.spec["where"] = check_where(self.spec["where"], list(table.c.keys()), self.spec["where_dialect"])

    def batch(self, conn, size, exact=False):
        self.sink.ref = self.sink.journal if self.stage == "merge" else None  # the ledger names the journal
        return super().batch(conn, size, exact)

    def _merge(self, conn, size, exact):
        spec = self.spec
        journal = pg_merge.ensure_journal(conn, spec["table"], spec["journal"])
        after = self.cursor.get("after")
        attempt = {"attempt": self.cursor["attempt"]} if "attempt" in self.cursor else {}
        upto, more = pg_merge.group_window(conn, spec, after, size)
        if upto is None:
            return 0, self.next_stage(**attempt)
        batch = pg_merge.Batch(conn, spec, journal, self.sink.run_id, self.sink.batch_no)
        losers = pg_merge.merge_into(batch, spec["table"], pg_merge.top_map(batch, after, upto))
        pg_merge.seal_batch(batch)
        self.groups = size if more else 0
        return losers, {"stage": "merge", "after": upto, **attempt} if more else self.next_stage(**attempt)

    def units(self, rows: int) -> int:
        return self.groups  # batches are sized in groups, not in the rows they remove

    def _constraint(self, conn, size, exact):
        """The unique index that stops it happening again, refused while duplicates remain."""
        wanted = self.step.spec.get("constraint")
        if wanted is None:
            return 0, None
        dialect, engine = self.ctx.dialect, self.ctx.engine
        with engine.connect() as check:
            groups = pg_merge.group_counts(check, {**self.spec, "group_by": wanted["columns"], "where": wanted["where"]})[0]
            state = dialect.index_state(check, self.table, wanted["name"])
        if state == "valid":
            return 0, None
        if groups:  # duplicates that arrived behind the walk: merged by another pass, a bounded number of times
            attempt = int(self.cursor.get("attempt", 1))
            if attempt >= MERGE_PASSES or wanted["columns"] != self.spec["group_by"] or wanted["where"] != self.spec["where"]:
                raise StoppedEarly(f"{groups} groups of {self.table.fullname} still have duplicates on "
                                   f"({', '.join(wanted['columns'])}) after {attempt} passes: the unique index "
                                   f"{wanted['name']} is not built; stop what writes them, then run again")
            return 0, {"stage": "merge", "after": None, "attempt": attempt + 1}
        if state == "invalid":
            dialect.drop_index(engine, self.table, wanted["name"])
        index = sa.Index(wanted["name"], *(self.table.c[c] for c in wanted["columns"]), unique=True,
                         postgresql_where=sa.text(wanted["where"]) if wanted["where"] else None)
        dialect.build_index(engine, index, self.ctx.options.lock_timeout_s)
        return 0, None


def walker(ctx, table, step, cursor):
    return MergeWalker(ctx, table, step, cursor)


def verify(conn: sa.Connection, dialect: Dialect, plan: PhasePlan) -> list[dict]:
    """One row per check, `rows_wrong` 0 when it holds: one row per group; nothing points at a
    removed row (foreign-key and polymorphic); every child table holds what it held, less the
    rows merged away; the constraint valid."""
    from ..dialects import pg_merge
    from ..ledger import Ledger

    step = plan.steps[0]
    spec = step.spec
    run_ids = Ledger(conn.engine).run_ids_for_plan(plan.plan_id)
    journal = pg_merge.journal_table(conn, spec["table"], spec["journal"])
    has_journal = has_table(conn, spec["journal"], reflect_table(conn, spec["table"]).schema)
    counts = pg_merge.journal_counts(conn, journal, run_ids) if has_journal else {}
    left = pg_merge.group_counts(conn, spec)[0]
    rows = [{"table": spec["table"], "check": "one row per group", "rows": spec["rows_before"][spec["table"]],
             "rows_wrong": left}]
    removed = {table: {k[spec["tables"][table]["key"]] for k in keys}
               for (action, table), (_, keys) in counts.items() if action == "delete"}
    for child in spec["children"]:
        gone = removed.get(child["parent"], set())
        dangling = pg_merge.pointing_at(conn, child, gone)
        rows.append({"table": child["table"], "check": f"nothing points at a removed {child['parent']} "
                     f"({child['column']})", "rows": len(gone), "rows_wrong": dangling})
    if has_journal:
        done = pg_merge.journal_by_column(conn, journal, run_ids)
        for name in sorted(set(spec["planned"]) | set(done)):
            action, table, column_name = name.split(" ", 2)
            rows.append({"table": table, "check": f"{action} {column_name or 'rows'}: journal = plan".replace("  ", " "),
                         "rows": done.get(name, 0), "rows_wrong": abs(done.get(name, 0) - spec["planned"].get(name, 0))})
    for table, before in spec["rows_before"].items():
        if table == spec["table"]:
            continue
        merged = counts.get(("delete", table), [0])[0]
        now = pg_merge.count_rows(conn, table)
        rows.append({"table": table, "check": "rows = before - merged away", "rows": now,
                     "rows_wrong": abs(before - merged - now)})
    wanted = spec.get("constraint")
    if wanted:
        state = dialect.index_state(conn, reflect_table(conn, spec["table"]), wanted["name"])
        rows.append({"table": spec["table"], "check": f"unique index {wanted['name']} valid", "rows": 1,
                     "rows_wrong": 0 if state == "valid" else 1})
    return rows


def restore(engine: sa.Engine, ledger, run, plan: PhasePlan, archive_dir=None):
    """Drop the constraint the run built (saying so), then replay the journal backwards, newest
    batch first, one transaction per batch marked restored in it: safe to run twice."""
    from ..dialects import dialect_for
    from ..undo import RestoreReport

    spec = plan.steps[0].spec
    dialect = dialect_for(engine)
    said = []
    batches = list(reversed(ledger.archived_batches(run.run_id)))
    with engine.connect() as conn:  # every batch's journal checked before anything changes
        journal = pg_merge.journal_table(conn, spec["table"], spec["journal"])
        for batch in batches:
            pg_merge.check_journal(conn, spec, journal, run.run_id, batch.batch_no)
    wanted = spec.get("constraint")
    if wanted:
        with engine.connect() as conn:
            table = reflect_table(conn, spec["table"])
            state = dialect.index_state(conn, table, wanted["name"])
        if state != "missing":
            dialect.drop_index(engine, table, wanted["name"])
            said.append(f"dropped unique index {wanted['name']} first")
    inserted = restored = 0
    for batch in batches:
        with engine.begin() as conn:
            journal = pg_merge.journal_table(conn, spec["table"], spec["journal"])  # the plan's, not the ledger's text
            rows, pointers = pg_merge.undo_batch(conn, spec, journal, run.run_id, batch.batch_no)
            inserted, restored = inserted + rows, restored + pointers
            ledger.mark_restored(conn, run.run_id, batch.batch_no)
    said.append(f"re-inserted {inserted:,} merged rows and set back {restored:,} pointers and names")
    return RestoreReport(run.run_id, plan.phase, len(batches), run.rows_done, inserted, 0, detail="; ".join(said))


class Merge(Kind):
    name = "merge"
    Config = Config

    build_plan = staticmethod(build_plan)
    selection = staticmethod(selection)
    verify = staticmethod(verify)
    walker = staticmethod(walker)
    restore = staticmethod(restore)

    def cannot_run_on(self, dialect_name: str) -> str | None:
        if dialect_name != "postgresql":
            return f"merge needs PostgreSQL (its journal keeps whole rows as jsonb), not {dialect_name}"
        return None

    def tables(self, cfg) -> list[str]:
        return [cfg.table, *dict.fromkeys(p.table for p in cfg.polymorphic)]

    def dry_run(self, plan, batch_size):
        step = plan.steps[0]
        groups = plan.profile[0]["groups"]
        size = batch_size or step.batch_size
        return [DryRunLine(step.table, step.rows_selected, "groups", size, -(-groups // size) if groups else 0)]
