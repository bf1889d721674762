"""Kind `cascade`: select parent entities by a rule (type, a `where`, no activity for N years),
delete their children (foreign-key children, and polymorphic children keyed by a type column and
an id column, which no foreign key can protect), then the parents (seed 000, NES contacts).

Parents are walked in key order, `parent.batch_size` at a time; each parent batch's keys are frozen
in the ledger cursor when it starts. Its children go first, each child table in transactions of
at most that table's `batch_size` rows; then one transaction deletes any straggling children and
the parents, guarded by NOT EXISTS on every child table: a parent is deleted only in the same
transaction as, or after, its last child. Kill it anywhere: the rerun resumes inside the same
parent batch, and nothing is deleted twice."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import Field, field_validator, model_validator

from ..archive import Change, NoArchive, TableArchive, archive_table_for
from ..catalog import check_value, column, primary_key, reflect_table, reflect_tables, time_column
from ..dialects import Dialect
from ..dialects.base import NO_ARCHIVE
from ..dialects.functions import latest_of
from ..durations import parse_duration
from ..errors import BadInput
from ..keys import from_json, to_json
from ..plan import PhasePlan, Step
from ..phase_config import Duration, PhaseBase, Strict, TableName, Where
from ..predicate import checked_where, where_clause
from ..throttle import BatchSizer
from ..walkers import Walker
from .base import DryRunLine, Kind
from .common import PlanParts

NONE = "none"


class Link(Strict):
    """How rows of a table point at a parent: a foreign-key column, or polymorphic
    (`type_column` = `type_value` and `id_column` = the parent's key)."""

    table: TableName
    fk_column: str | None = None
    type_column: str | None = None
    id_column: str | None = None
    type_value: int | str | None = None

    @model_validator(mode="after")
    def _one_join(self) -> Link:
        polymorphic = (self.type_column, self.id_column, self.type_value)
        if self.fk_column is not None and any(v is not None for v in polymorphic):
            raise ValueError(f"{self.table}: give fk_column, or type_column + id_column + type_value, not both")
        if self.fk_column is None and any(v is None for v in polymorphic):
            raise ValueError(f"{self.table}: give fk_column, or all of type_column, id_column and type_value")
        return self


class Child(Link):
    batch_size: int | None = Field(default=None, ge=1, le=1_000_000)  # rows of this table per transaction, at most


class Activity(Link):
    time_column: str


class Parent(Strict):
    table: TableName
    type_column: str | None = None
    type_value: int | str | None = None
    where: Where | None = None
    inactive_for: Duration | None = None  # no activity for this long, across activity_columns and [[phase.activity]]
    activity_columns: list[str] = []
    # parents per transaction, at most; sized from the observed cost per parent to target_batch_ms
    batch_size: int | None = Field(default=None, ge=1, le=100_000)


FIRST_PARENT_BATCH = 100


class Config(PhaseBase):
    kind: Literal["cascade"]
    parent: Parent
    children: list[Child] = Field(min_length=1)
    activity: list[Activity] = []

    @field_validator("archive")
    @classmethod
    def _table_archive_only(cls, value: str) -> str:
        if value == "parquet":
            raise ValueError("a cascade archives into tables (<table>__archive, one per table): use archive = 'table'")
        return value

    @model_validator(mode="after")
    def _activity_needs_a_window(self) -> Config:
        if (self.activity or self.parent.activity_columns) and self.parent.inactive_for is None:
            raise ValueError("parent.inactive_for is needed when activity evidence is listed")
        return self


# predicates --------------------------------------------------------------------------------
def link(row_table: sa.Table, spec: dict, parent: sa.Table, key: sa.Column) -> sa.ColumnElement:
    if spec.get("fk_column"):
        return row_table.c[spec["fk_column"]] == key
    return sa.and_(row_table.c[spec["type_column"]] == spec["type_value"], row_table.c[spec["id_column"]] == key)


def childless(child: sa.Table, spec: dict, parent: sa.Table, key: sa.Column) -> sa.ColumnElement:
    """NOT EXISTS a row of `child` pointing at the parent row: the guard of a parent delete."""
    return ~sa.exists(sa.select(sa.literal(1)).select_from(child).where(link(child, spec, parent, key)))


def parent_selection(tables: dict[str, sa.Table], spec: dict) -> sa.ColumnElement:
    """The frozen parent rule: type, `where`, and no activity at or after the frozen cutoff."""
    p = spec["parent"]
    parent = tables[p["table"]]
    key = parent.c[spec["key"]]
    clauses = []
    if p.get("type_column"):
        clauses.append(parent.c[p["type_column"]] == p["type_value"])
    if p.get("where") is not None:
        clauses.append(where_clause(p, parent))
    if p.get("cutoff"):
        cutoff = datetime.fromisoformat(p["cutoff"])
        for name in p.get("activity_columns", []):
            clauses.append(sa.or_(parent.c[name].is_(None), parent.c[name] < _moment(parent.c[name], cutoff)))
        for act in spec["activity"]:
            table = tables[act["table"]]
            recent = table.c[act["time_column"]] >= _moment(table.c[act["time_column"]], cutoff)
            clauses.append(~sa.exists(sa.select(sa.literal(1)).select_from(table).where(link(table, act, parent, key), recent)))
    return sa.and_(*clauses) if clauses else sa.true()


def _moment(col: sa.Column, moment: datetime):
    from .retention import _column_moment

    return _column_moment(col, moment)


def children_of(child: sa.Table, spec: dict, parents) -> sa.ColumnElement:
    """Rows of `child` pointing at any of `parents`: a function of the pointer column giving the
    condition (e.g. IN a subquery of parent keys)."""
    if spec.get("fk_column"):
        return parents(child.c[spec["fk_column"]])
    return sa.and_(child.c[spec["type_column"]] == spec["type_value"], parents(child.c[spec["id_column"]]))


def selection(table: sa.Table, step: Step) -> sa.ColumnElement:
    """The walker builds the parent rule itself: it needs the activity tables reflected too."""
    return sa.true()


def reflect_all(conn: sa.Connection, spec: dict) -> dict[str, sa.Table]:
    names = [spec["parent"]["table"], *(c["table"] for c in spec["children"]), *(a["table"] for a in spec["activity"])]
    return reflect_tables(conn, names)


# plan --------------------------------------------------------------------------------------
def build_plan(cfg: Config, conn: sa.Connection, dialect: Dialect, now: datetime,
               window=None) -> PlanParts:
    p = cfg.parent
    parent = reflect_table(conn, p.table)
    keys = primary_key(parent)
    if len(keys) != 1:
        raise BadInput(f"cascade parent '{p.table}' needs a single-column primary key")
    key = keys[0]
    if p.type_column:
        check_value(conn, column(parent, p.type_column, "parent.type_column"), p.type_value, "parent.type_value")
    for name in p.activity_columns:
        time_column(parent, name, "parent.activity_columns", "activity is compared with inactive_for")
    where = checked_where(p.where, parent, dialect.name) if p.where is not None else {"where": None}
    cutoff = now - parse_duration(p.inactive_for) if p.inactive_for else None
    spec = {
        "key": key.name,
        "parent": {**p.model_dump(exclude={"where", "inactive_for"}), **where,
                   "cutoff": cutoff.isoformat() if cutoff else None},
        "children": [c.model_dump() for c in cfg.children],
        "activity": [a.model_dump() for a in cfg.activity],
    }
    tables = reflect_all(conn, spec)
    parent = tables[p.table]
    key = parent.c[key.name]
    for link_cfg in [*cfg.children, *cfg.activity]:
        table = tables[link_cfg.table]
        for key_name in ("fk_column", "type_column", "id_column", "time_column"):
            if getattr(link_cfg, key_name, None):
                column(table, getattr(link_cfg, key_name), f"{link_cfg.table}: {key_name}")
        if link_cfg.type_column:
            check_value(conn, table.c[link_cfg.type_column], link_cfg.type_value, f"{link_cfg.table}: type_value")
        if getattr(link_cfg, "time_column", None):
            time_column(table, link_cfg.time_column, f"{link_cfg.table}: time_column",
                        "activity is compared with inactive_for")
    chosen = parent_selection(tables, spec)
    selected = sa.select(key).where(chosen)
    profile, blockers = [], uncovered_foreign_keys(conn, tables, cfg)
    latest = _latest_activity(tables, spec, parent, key)
    row = conn.execute(sa.select(
        sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((chosen, 1), else_=0)), 0),
        sa.func.min(sa.case((chosen, latest))), sa.func.max(sa.case((chosen, latest))),
        sa.func.min(sa.case((chosen, key))), sa.func.max(sa.case((chosen, key))),
    ).select_from(parent)).one()
    rows_total, parents_selected = int(row[0]), int(row[1])
    live = _unexpected_parents(conn, tables, spec, chosen, p) + _referenced_parents(conn, parent, key, chosen)
    profile.append(_profile_row(conn, dialect, parent, "parent", rows_total, parents_selected,
                                blockers.get(parent.fullname, []) + live, row[2], row[3]))
    for child_cfg in cfg.children:
        child = tables[child_cfg.table]
        total, chosen_rows = conn.execute(sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((children_of(child, child_cfg.model_dump(), lambda c: c.in_(selected)), 1),
                                                  else_=0)), 0),
        ).select_from(child)).one()
        orphans = _orphans(conn, child, child_cfg.model_dump(), parent, key)
        profile.append({**_profile_row(conn, dialect, child, "child", int(total), int(chosen_rows),
                                       blockers.get(child.fullname, [])), "orphans_before": orphans,
                        "batch_size": child_cfg.batch_size})
    spec["orphans_before"] = {r["table"]: r["orphans_before"] for r in profile if r["role"] == "child"}
    step = Step(table=parent.fullname, walk="cascade", key=[key.name], rows_selected=sum(r["rows_selected"] for r in profile),
                batch_size=p.batch_size or FIRST_PARENT_BATCH, spec={**spec, "parent_cap": p.batch_size}, first_key=to_json([row[4]]) if parents_selected else None,
                last_key=to_json([row[5]]) if parents_selected else None)
    return PlanParts(steps=[step], profile=profile, cutoff=cutoff, expect={
        "max_rows": cfg.expect.max_rows if cfg.expect.max_rows is not None else max(r["rows_total"] for r in profile),
        "max_fraction": cfg.expect.max_fraction if cfg.expect.max_fraction is not None else 1.0,
        "min_rows": cfg.expect.min_rows,
    })


def _profile_row(conn, dialect, table, role, total, chosen, blockers, oldest=None, newest=None) -> dict:
    size = dialect.table_bytes(conn, table)
    return {
        "table": table.fullname, "role": role, "rows_total": total, "rows_selected": chosen,
        "fraction_selected": chosen / total if total else 0.0,
        "est_bytes": int(size * chosen / total) if size and total else None,
        "oldest_activity": oldest.isoformat() if hasattr(oldest, "isoformat") else oldest,
        "newest_activity": newest.isoformat() if hasattr(newest, "isoformat") else newest,
        "blockers": "; ".join(blockers) if blockers else NONE,
    }


def _latest_activity(tables, spec, parent: sa.Table, key: sa.Column):
    """The newest activity of a parent across its activity columns and activity tables."""
    parts = [parent.c[name] for name in spec["parent"].get("activity_columns", [])]
    for act in spec["activity"]:
        table = tables[act["table"]]
        parts.append(sa.select(sa.func.max(table.c[act["time_column"]])).where(link(table, act, parent, key))
                     .scalar_subquery())
    if not parts:
        return sa.null()
    return parts[0] if len(parts) == 1 else latest_of(*parts)


def _unexpected_parents(conn, tables, spec, chosen, p: Parent) -> list[str]:
    """The gate's SQL expectation on the live tables: no selected parent has activity at or after
    the cutoff or is of another type, evaluated as its own query over the newest activity."""
    if not spec["parent"].get("cutoff") and not p.type_column:
        return []
    parent = tables[p.table]
    key = parent.c[spec["key"]]
    wrong = []
    if p.type_column:
        wrong.append(parent.c[p.type_column] != p.type_value)
    latest = _latest_activity(tables, spec, parent, key)
    if spec["parent"].get("cutoff") and not isinstance(latest, sa.sql.elements.Null):
        wrong.append(latest >= datetime.fromisoformat(spec["parent"]["cutoff"]))
    if not wrong:
        return []
    keys = conn.execute(sa.select(key).where(chosen, sa.or_(*wrong)).order_by(key).limit(5)).scalars().all()
    return [f"selected parents that are active or of another type: {', '.join(map(str, keys))}"] if keys else []


def _referenced_parents(conn, parent: sa.Table, key: sa.Column, chosen) -> list[str]:
    """A foreign key from the parent table to itself (an account's parent_account_id): a selected
    parent that another row points at cannot go before that row, and a kept row never lets it go.
    The gate refuses, naming the constraint, before any child is touched."""
    found = []
    for fk in sa.inspect(conn).get_foreign_keys(parent.name, schema=parent.schema):
        same = fk["referred_table"] == parent.name and (fk.get("referred_schema") or parent.schema) == parent.schema
        if not same or fk["referred_columns"] != [key.name] or len(fk["constrained_columns"]) != 1:
            continue
        other = parent.alias("referrer")
        pointer = other.c[fk["constrained_columns"][0]]
        referenced = sa.exists(sa.select(sa.literal(1)).select_from(other)
                               .where(pointer == key, other.c[key.name] != key))
        keys = conn.execute(sa.select(key).where(chosen, referenced).order_by(key).limit(5)).scalars().all()
        if keys:
            count = conn.execute(sa.select(sa.func.count()).select_from(parent).where(chosen, referenced)).scalar()
            found.append(f"foreign key {fk['name']} on {parent.fullname}({fk['constrained_columns'][0]}): {count:,} "
                         f"selected parents are referenced by other rows of the table (e.g. {', '.join(map(str, keys))})")
    return found


def _orphans(conn, child: sa.Table, spec: dict, parent: sa.Table, key: sa.Column) -> int:
    """Children whose parent does not exist (polymorphic links have no foreign key to prevent it)."""
    if spec.get("fk_column"):
        pointer, same_type = child.c[spec["fk_column"]], sa.true()
    else:
        pointer, same_type = child.c[spec["id_column"]], child.c[spec["type_column"]] == spec["type_value"]
    missing = ~sa.exists(sa.select(sa.literal(1)).select_from(parent).where(key == pointer))
    return int(conn.execute(sa.select(sa.func.count()).select_from(child)
                            .where(same_type, pointer.is_not(None), missing)).scalar())


def uncovered_foreign_keys(conn, tables: dict[str, sa.Table], cfg: Config) -> dict[str, list[str]]:
    """Every foreign key into a table this phase deletes from must be one of its fk children
    (a self-reference goes with the rows themselves)."""
    parent = tables[cfg.parent.table]
    deleting = {(t.schema, t.name): t for t in [parent, *(tables[c.table] for c in cfg.children)]}
    covered = {((tables[c.table].schema, tables[c.table].name), c.fk_column) for c in cfg.children if c.fk_column}
    inspector = sa.inspect(conn)
    found: dict[str, list[str]] = {}
    for schema in {t.schema for t in deleting.values()}:
        for source, fks in inspector.get_multi_foreign_keys(schema=schema).items():
            for fk in fks:
                target = deleting.get((fk.get("referred_schema") or source[0], fk["referred_table"]))
                if target is None or source == (target.schema, target.name):
                    continue
                columns = fk["constrained_columns"]
                if target is parent and len(columns) == 1 and (source, columns[0]) in covered:
                    continue
                name = ".".join(part for part in source if part)
                found.setdefault(target.fullname, []).append(
                    f"foreign key {fk['name']} on {name}({', '.join(columns)}) is not covered by the policy")
    return found


# execution ---------------------------------------------------------------------------------
class CascadeWalker(Walker):
    """One transaction per call. A call deletes the children of the current parent batch, at most
    each table's `batch_size` rows per table; when a table has more, the transaction ends there and
    the next call goes on from that table. Once every child table is done, the same transaction
    deletes the parents that have no child left. The cursor says where it stands: {"after": last
    parent key done, "parents": the batch's frozen keys, "child": index of the first child table
    not yet done}. Every call starts from the cursor last committed: a call whose transaction was
    rolled back (a lock timeout, then a retry) counts nothing it did as done.

    On PostgreSQL the child tables' deletes are one statement (a data-modifying WITH per table, each
    with its own limit): one round trip instead of one per table. Elsewhere, or when a child table
    has a foreign key to another, they go one table at a time, in order."""

    def __init__(self, dialect: Dialect, table: sa.Table, step: Step, sink, options, cursor: dict):
        self.dialect, self.step, self.sink = dialect, step, sink
        self.spec = step.spec
        self.key_name = step.spec["key"]
        self.state = {"after": cursor.get("after"), "parents": cursor.get("parents"), "child": cursor.get("child", 0)}
        self.done = step.last_key is None
        # parents per transaction: from the cost per parent seen so far, to target_batch_ms, within
        # the policy's parent batch_size when it sets one (a fixed size from the command line)
        cap = step.spec.get("parent_cap") or 100_000
        self.sizer = BatchSizer(options.batch_size or min(step.batch_size, cap), options.target_batch_ms, minimum=1,
                                maximum=options.batch_size or cap)
        self.spent, self.finished_parents = 0.0, None
        self.tables: dict[str, sa.Table] | None = None
        self.table_name = step.table

    def _prepare(self, conn: sa.Connection) -> None:
        if self.tables is None:
            self.tables = reflect_all(conn, self.spec)
            self.parent = self.tables[self.spec["parent"]["table"]]
            self.key = self.parent.c[self.key_name]
            self.chosen = parent_selection(self.tables, self.spec)
            self.last = from_json([self.key], self.step.last_key)[0]
            self.children = [self.tables[c["table"]] for c in self.spec["children"]]
            self.sinks = {t.fullname: self.sink.for_table(conn, self.dialect, t) if isinstance(self.sink, ArchiveSet)
                          else NO_ARCHIVE for t in [self.parent, *self.children]}
            self.together = hasattr(self.dialect, "delete_some_each") and not _linked_to_each_other(self.children)
            self.guards = [childless(table, spec, self.parent, self.key)
                           for table, spec in zip(self.children, self.spec["children"])]

    def _parents_now(self, keys: list, selected_here: bool):
        """This batch's parents: as selected, when that was in this transaction; else those that
        still match the rule, so a parent that became active since loses no more children."""
        if selected_here:
            return self.dialect.in_shared_values(self.key, keys)
        still = sa.select(self.key).where(self.dialect.in_values(self.key, keys), self.chosen)
        return lambda pointer: pointer.in_(still)

    @property
    def parent_size(self) -> int:
        return self.sizer.size

    def batch(self, conn: sa.Connection, size: int, exact: bool = False) -> tuple[int, dict | None]:
        began = time.perf_counter()
        try:
            return self._batch(conn)
        finally:
            self.spent += time.perf_counter() - began

    def _batch(self, conn: sa.Connection) -> tuple[int, dict | None]:
        self._prepare(conn)
        self.finished_parents = None
        state = dict(self.state)  # as last committed; advance() moves it once this transaction has
        selected_here = state["parents"] is None
        if selected_here:
            state["parents"], state["child"] = self._next_parents(conn, state["after"]), 0
            if not state["parents"]:
                self.table_name = self.step.table
                return 0, None
        keys = from_json([self.key] * len(state["parents"]), state["parents"])
        rows, unfinished, touched = self._delete_children(conn, state["child"], self._parents_now(keys, selected_here))
        if unfinished is not None:  # that table has more: it goes on in the next transaction
            self.table_name = ", ".join(touched)
            return rows, {**state, "child": unfinished}
        rows += self._delete_parents(conn, keys)
        self.finished_parents = len(keys)
        self.table_name = ", ".join([*touched, self.parent.fullname])
        last = state["parents"][-1]
        finished = from_json([self.key], [last])[0] >= self.last
        return rows, None if finished else {"after": [last], "parents": None, "child": 0}

    def _delete_children(self, conn: sa.Connection, first: int, parents) -> tuple[int, int | None, list[str]]:
        """Children of child tables `first`.. : rows deleted, the first table that reached its
        batch size (None when all are done), and the tables touched."""
        specs = self.spec["children"][first:]
        parts = [(table, children_of(table, spec, parents), spec.get("batch_size"), self.sinks[table.fullname])
                 for table, spec in zip(self.children[first:], specs)]
        if self.together:
            counts = self.dialect.delete_some_each(conn, parts)
        else:
            counts = []
            for part in parts:
                counts.append(self.dialect.delete_some(conn, *part))
                if part[2] is not None and counts[-1] >= part[2]:
                    break
        full = [first + i for i, (n, spec) in enumerate(zip(counts, specs))
                if spec.get("batch_size") is not None and n >= spec["batch_size"]]
        touched = [part[0].fullname for part in parts[:len(counts)]]
        return sum(counts), (full[0] if full else None), touched

    def _next_parents(self, conn: sa.Connection, after) -> list | None:
        window = [self.chosen, self.key <= self.last]
        if after is not None:
            window.append(self.key > from_json([self.key], after)[0])
        keys = conn.execute(sa.select(self.key).where(*window).order_by(self.key).limit(self.parent_size)).scalars().all()
        return to_json(keys) if keys else None

    def _delete_parents(self, conn: sa.Connection, keys: list) -> int:
        """Only parents still selected and with no child left in any child table (one added since
        the children went keeps its parent, and is reported by verify, never orphaned)."""
        doomed = sa.delete(self.parent).where(self.dialect.in_values(self.key, keys), self.chosen, *self.guards)
        return self.sinks[self.parent.fullname].apply(conn, doomed, self.parent)

    def advance(self, cursor: dict, rows: int, size: int) -> None:
        if self.finished_parents:  # a parent batch committed: its cost per parent sizes the next
            self.sizer.observe(self.finished_parents, self.spent)
            self.spent = 0.0
        if cursor.get("after") is None and cursor.get("parents") is None:
            self.done = True
        self.state = {"after": cursor.get("after"), "parents": cursor.get("parents"), "child": cursor.get("child", 0)}


def _linked_to_each_other(children: list[sa.Table]) -> bool:
    """Whether a child table has a foreign key to another: then they are deleted in their order."""
    names = {t.fullname for t in children}
    return any(fk.target_fullname.rpartition(".")[0] in names - {table.fullname}
               for table in children for fk in table.foreign_keys)


class ArchiveSet(Change):
    """archive = "table" for a cascade: one `<table>__archive` per table, all stamped with the
    transaction's run and batch; the ledger row names them all."""

    def __init__(self):
        self.archives: list[TableArchive] = []
        self.stamp: tuple[str, int] | None = None

    def for_table(self, conn: sa.Connection, dialect: Dialect, table: sa.Table) -> TableArchive:
        archive = TableArchive.ensure(conn.engine, dialect, table)
        if self.stamp is not None:
            archive.begin_batch(*self.stamp)
        self.archives.append(archive)
        return archive

    def begin_batch(self, run_id: str, batch_no: int) -> None:
        self.stamp = (run_id, batch_no)
        for archive in self.archives:
            archive.begin_batch(run_id, batch_no)

    @property
    def ref(self) -> str:
        return json.dumps({"cascade": [a.ref for a in self.archives]})


def verify(conn: sa.Connection, dialect: Dialect, plan: PhasePlan) -> list[dict]:
    """Nothing selected remains among the parents (within the frozen key range), and no child was
    left without its parent beyond the orphans that were there before."""
    step = plan.steps[0]
    spec = step.spec
    tables = reflect_all(conn, spec)
    parent = tables[spec["parent"]["table"]]
    key = parent.c[spec["key"]]
    chosen = parent_selection(tables, spec)
    in_range = sa.and_(chosen, key <= from_json([key], step.last_key)[0]) if step.last_key else sa.false()
    rows = [{"table": parent.fullname, "rows_now": conn.execute(sa.select(sa.func.count()).select_from(parent)).scalar(),
             "remaining_selected": conn.execute(sa.select(sa.func.count()).select_from(parent).where(in_range)).scalar()}]
    for child_spec in spec["children"]:
        child = tables[child_spec["table"]]
        orphans = _orphans(conn, child, child_spec, parent, key)
        rows.append({"table": child.fullname,
                     "rows_now": conn.execute(sa.select(sa.func.count()).select_from(child)).scalar(),
                     "remaining_selected": max(0, orphans - spec["orphans_before"].get(child.fullname, 0))})
    return rows


def restore(engine: sa.Engine, ledger, run, plan: PhasePlan, archive_dir=None):
    """Newest batch first; in each, the parents before their children (foreign keys need them)."""
    from ..archive import open_archive
    from ..undo import insert_from_archive, rows_put_back

    step = plan.steps[0]
    batches = ledger.archived_batches(run.run_id)
    if run.rows_done and not any(json.loads(b.archive).get("cascade") for b in batches if b.archive):
        raise BadInput(f"run {run.run_id} recorded no archive (archive = 'none'): there is nothing to restore from")
    archived = restored = 0
    with engine.connect() as conn:
        tables = reflect_all(conn, step.spec)
        order = [tables[step.spec["parent"]["table"]], *(tables[c["table"]] for c in step.spec["children"])]
        archives = [open_archive(conn, archive_table_for(table).fullname) for table in order]
        conn.commit()  # the indexes a restore reads by
    for batch in reversed(batches):
        with engine.begin() as conn:
            for table, archive in zip(order, archives):
                restored += insert_from_archive(conn, table, list(table.primary_key.columns), archive, run.run_id,
                                                batch.batch_no)
            ledger.mark_restored(conn, run.run_id, batch.batch_no)
        archived += batch.rows
    return rows_put_back(run.run_id, plan.phase, len(batches), archived, restored, f" across {len(order)} tables")


class Cascade(Kind):
    name = "cascade"
    Config = Config

    build_plan = staticmethod(build_plan)
    selection = staticmethod(selection)
    verify = staticmethod(verify)

    def tables(self, cfg) -> list[str]:
        return [cfg.parent.table, *(child.table for child in cfg.children)]

    def dry_run(self, plan, batch_size):
        """A line per table. One transaction per parent batch, plus one more for every further
        `batch_size` of a child table than its share of the parent batches holds."""
        step = plan.steps[0]
        lines = [DryRunLine(row["table"], row["rows_selected"], f"cascade {row['role']}",
                            row.get("batch_size") or batch_size or step.batch_size, 0) for row in plan.profile]
        parent_batches = sum(math.ceil(line.rows / line.batch_size) for line in lines if line.walk == "cascade parent")
        for line in lines:
            batches = math.ceil(line.rows / line.batch_size)
            line.transactions = batches if line.walk == "cascade parent" else max(0, batches - parent_batches)
        return lines

    def walker(self, ctx, table, step, cursor):
        sink = ArchiveSet() if ctx.options.archive == "table" else NoArchive()
        return CascadeWalker(ctx.dialect, table, step, sink, ctx.options, cursor)

    restore = staticmethod(restore)
