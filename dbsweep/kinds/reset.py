"""Kind `reset`: a guarded bulk state update by ordered rules, first match wins (seed 001: set
sync_state/action_type on FACT_ORDER_LIST so only the test PO syncs). Only rows whose values
differ from their rule's are touched; their previous values are saved in `<table>__previous` in
the batch's own transaction, and `dbsweep restore` puts them back."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import Field, ValidationError, field_validator, model_validator

from ..archive import BATCH_NO, RUN_ID, Change, ensure_table, stamped_copy_table
from ..catalog import check_value, column, has_table, reflect_table
from ..dialects import Dialect
from ..errors import BadInput
from ..names import derived
from ..plan import PhasePlan, Step
from ..phase_config import PhaseBase, Strict, TableName
from .base import Kind
from .common import PlanParts, key_columns, walk_step

PREVIOUS_SUFFIX = "__previous"
Scalar = str | int | float | bool | None
ALWAYS = sa.literal_column("1") == sa.literal_column("1")  # `true` that T-SQL accepts in CASE WHEN


class Condition(Strict):
    """One test on one column: `equals`, `in` or `is_null`."""

    model_config = {**Strict.model_config, "populate_by_name": True}
    column: str
    equals: Scalar = None
    in_: list[str | int | float] | None = Field(default=None, alias="in")
    is_null: bool | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        given = [k for k in ("equals", "in_", "is_null") if k in self.model_fields_set]
        if len(given) != 1:
            raise ValueError("a match gives exactly one of 'equals', 'in' or 'is_null'")
        if "equals" in given and self.equals is None:
            raise ValueError("use is_null = true to match NULL, not equals")
        return self


class Rule(Strict):
    name: str | None = None
    match: Literal["otherwise"] | Condition | list[Condition]
    set: dict[str, Scalar]
    min_rows: int = Field(default=0, ge=0)  # the gate refuses when the rule matches fewer rows
    max_rows: int | None = Field(default=None, ge=0)

    @field_validator("match", mode="before")
    @classmethod
    def _match(cls, value):
        """One clear message instead of one per shape a match may take."""
        if isinstance(value, str):
            if value != "otherwise":
                raise ValueError(f"match {value!r}: use \"otherwise\" or a table like {{ column = ..., equals = ... }}")
            return value
        try:
            if isinstance(value, list):
                return [Condition.model_validate(item) for item in value]
            return Condition.model_validate(value)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            raise ValueError(f"{where + ': ' if where else ''}{error['msg'].removeprefix('Value error, ')}") from None

    @field_validator("set")
    @classmethod
    def _not_empty(cls, value: dict) -> dict:
        if not value:
            raise ValueError("a rule must set at least one column")
        return value

    def label(self, index: int) -> str:
        return self.name or f"rule {index + 1}"


class ConsumerQuery(Strict):
    """A downstream consumer's own selection (seed 001: the sync engine's), which after the reset
    must pick exactly the rows of `expect_rules`."""

    where: dict[str, Scalar | list[str | int | float]]
    expect_rules: list[str]


class Config(PhaseBase):
    kind: Literal["reset"]
    table: TableName
    rules: list[Rule] = Field(min_length=1)
    verify_query: ConsumerQuery | None = None
    archive_modes = ("none",)
    archive_why = "a reset keeps the previous values of every row it changes in <table>__previous"

    @model_validator(mode="after")
    def _otherwise_last(self) -> Config:
        for index, rule in enumerate(self.rules[:-1]):
            if rule.match == "otherwise":
                raise ValueError(f"rules: 'otherwise' must be the last rule ({rule.label(index)} is not)")
        if self.verify_query:
            labels = {rule.label(i) for i, rule in enumerate(self.rules)}
            unknown = [name for name in self.verify_query.expect_rules if name not in labels]
            if unknown:
                raise ValueError(f"verify_query: no rule named {unknown[0]!r} (rules: {', '.join(sorted(labels))})")
        return self


def written_matches(rules: list[dict]) -> list[str]:
    """Columns a rule sets that a rule's match reads: a row the run changes could match another
    rule afterwards, so matching reads what those columns held before dbsweep reset them."""
    matched = set()
    for raw in rules:
        rule = Rule.model_validate(raw)
        if rule.match != "otherwise":
            matched |= {c.column for c in (rule.match if isinstance(rule.match, list) else [rule.match])}
    return sorted(matched & {name for raw in rules for name in raw["set"]})


def as_before(table: sa.Table, spec: dict, saved: bool = True) -> dict[str, sa.ColumnElement]:
    """What each matched column held before any reset not undone since: the value saved in
    `<table>__previous` when there is one (the frozen state the rules judge), else the value now.
    `saved`: whether that table exists yet (before the first run it does not)."""
    values = {c.name: c for c in table.c}
    if not saved or not spec.get("frozen"):
        return values
    keys = list(table.primary_key.columns)
    previous = previous_table_for(table, spec).alias("dbsweep_before")
    for name in spec["frozen"]:
        first = (sa.select(previous.c[name]).where(*(previous.c[k.name] == k for k in keys))
                 .order_by(previous.c[RUN_ID], previous.c[BATCH_NO]).limit(1))
        values[name] = sa.case((sa.exists(first), first.scalar_subquery()), else_=table.c[name])
    return values


def _condition(table: sa.Table, cond: Condition, values: dict | None = None) -> sa.ColumnElement:
    col = (values or table.c)[cond.column]
    if "is_null" in cond.model_fields_set:
        return col.is_(None) if cond.is_null else col.is_not(None)
    if "in_" in cond.model_fields_set:
        return col.in_(cond.in_)
    return col == cond.equals


def rule_predicates(table: sa.Table, rules: list[dict], values: dict | None = None) -> list[sa.ColumnElement]:
    """Each rule's own match (not yet first-match-wins), on `values` (default: the columns now)."""
    out = []
    for raw in rules:
        rule = Rule.model_validate(raw)
        if rule.match == "otherwise":
            out.append(ALWAYS)
        else:
            conds = rule.match if isinstance(rule.match, list) else [rule.match]
            out.append(sa.and_(*(_condition(table, c, values) for c in conds)))
    return out


def first_match(predicates: list[sa.ColumnElement]) -> list[sa.ColumnElement]:
    """Rule i applies where it matches and no earlier rule did. Tests are folded to 0/1 with CASE,
    as the CASE of the update does: a test that is NULL is no match (and T-SQL has no boolean values)."""
    matched = [sa.case((pred, 1), else_=0) for pred in predicates]
    return [sa.and_(matched[i] == 1, *(m == 0 for m in matched[:i])) for i in range(len(matched))]


def targets(table: sa.Table, rules: list[dict], values: dict | None = None) -> dict[str, sa.ColumnElement]:
    """Per column set by any rule: CASE over the rules in order, the column itself where a matching
    rule leaves it alone, and where no rule matches."""
    predicates = rule_predicates(table, rules, values)
    columns = sorted({name for raw in rules for name in raw["set"]})
    out = {}
    for name in columns:
        col = table.c[name]
        whens = [(pred, sa.literal(raw["set"][name], col.type) if name in raw["set"] else col)
                 for pred, raw in zip(predicates, rules)]
        out[name] = sa.case(*whens, else_=col)
    return out


def selection(table: sa.Table, step: Step, saved: bool = True) -> sa.ColumnElement:
    """Rows whose value differs from the one their rule gives them."""
    values = as_before(table, step.spec, saved)
    return sa.or_(*(table.c[name].is_distinct_from(target)
                    for name, target in targets(table, step.spec["rules"], values).items()))


def build_plan(cfg: Config, conn: sa.Connection, dialect: Dialect, now: datetime,
               window=None) -> PlanParts:
    table = reflect_table(conn, cfg.table)
    keys = {c.name for c in table.primary_key.columns}
    for index, rule in enumerate(cfg.rules):
        for name, value in rule.set.items():
            if name in keys:
                raise BadInput(f"{rule.label(index)}: set writes primary-key column '{name}'; a reset changes state, "
                               "never a row's identity")
            check_value(conn, column(table, name, f"{rule.label(index)}: set"), value, f"{rule.label(index)}: set")
        if rule.match != "otherwise":
            for cond in rule.match if isinstance(rule.match, list) else [rule.match]:
                col = column(table, cond.column, f"{rule.label(index)}: match")
                for value in [cond.equals] if "equals" in cond.model_fields_set else (cond.in_ or []):
                    check_value(conn, col, value, f"{rule.label(index)}: match")
    rules = [rule.model_dump(by_alias=True, exclude_unset=True) for rule in cfg.rules]
    spec = {"rules": rules, "columns": sorted({n for r in cfg.rules for n in r.set}), "frozen": written_matches(rules)}
    if cfg.verify_query:
        for name in cfg.verify_query.where:
            column(table, name, "verify_query.where")
        spec["verify_query"] = cfg.verify_query.model_dump()
    probe = Step(table=table.fullname, walk="key", rows_selected=0, batch_size=cfg.start_batch_size, spec=spec)
    saved = _saved(conn, table, spec)
    changes = selection(table, probe, saved)
    applies = first_match(rule_predicates(table, rules, as_before(table, spec, saved)))

    def count_if(condition):
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    counts = conn.execute(sa.select(
        sa.func.count(), count_if(changes),
        *[count_if(a) for a in applies], *[count_if(sa.and_(a, changes)) for a in applies],
    ).select_from(table)).one()
    rows_total, rows_changed = int(counts[0]), int(counts[1])
    n = len(cfg.rules)
    profile = [{
        "table": table.fullname, "rule": rule.label(i), "rows_total": rows_total,
        "rows_matching": int(counts[2 + i]), "rows_selected": int(counts[2 + n + i]),
        "min_rows": rule.min_rows, "max_rows": rule.max_rows if rule.max_rows is not None else rows_total,
        "sets": ", ".join(f"{k} = {v!r}" for k, v in rule.set.items()),
        "writes": previous_table_for(table, spec).fullname,  # previous values, by the name dbsweep derives
    } for i, rule in enumerate(cfg.rules)]
    if rows_changed and not key_columns_possible(table):
        raise BadInput(f"table '{table.fullname}' has no primary key: reset needs one to save previous values")
    step = walk_step(conn, dialect, table, changes, rows_changed, cfg.start_batch_size, spec)
    return PlanParts(steps=[step], profile=profile, expect={
        "max_rows": cfg.expect.max_rows if cfg.expect.max_rows is not None else rows_total,
        "min_rows": cfg.expect.min_rows,
    })


def _saved(conn, table: sa.Table, spec: dict) -> bool:
    previous = previous_table_for(table, spec)
    return has_table(conn, previous.name, previous.schema)


def key_columns_possible(table: sa.Table) -> bool:
    return bool(list(table.primary_key.columns))


class ResetChange(Change):
    """The walker's change for a key window: an UPDATE that first saves the previous values."""

    def __init__(self, dialect: Dialect, table: sa.Table, previous: sa.Table, keys: list[sa.Column], spec: dict):
        self.dialect, self.table, self.previous, self.keys = dialect, table, previous, keys
        self.targets = targets(table, spec["rules"], as_before(table, spec))

    def begin_batch(self, run_id: str, batch_no: int) -> None:
        self.run_id, self.ref = run_id, self.previous.fullname
        self.stamp = {RUN_ID: run_id, BATCH_NO: batch_no}

    def apply(self, conn: sa.Connection, stmt: sa.Delete, table: sa.Table) -> int:
        return self.dialect.update_saving_previous(conn, table, self.previous, self.keys, self.targets,
                                                   stmt.whereclause, self.stamp)


def previous_table_for(table: sa.Table, spec: dict) -> sa.Table:
    keys = list(table.primary_key.columns)
    previous = stamped_copy_table(table, keys + [table.c[n] for n in spec["columns"] if n not in [k.name for k in keys]],
                                  PREVIOUS_SUFFIX)
    if spec.get("frozen"):  # matching looks a row's saved values up by its key
        sa.Index(derived(f"ix_{table.name}", f"{PREVIOUS_SUFFIX}_key"), *(previous.c[k.name] for k in keys))
    return previous


def verify(conn: sa.Connection, dialect: Dialect, plan: PhasePlan) -> list[dict]:
    """Per rule: rows it applies to, and how many of those do not carry its values (must be 0)."""
    step = plan.steps[0]
    table = reflect_table(conn, step.table)
    rules = step.spec["rules"]
    applies = first_match(rule_predicates(table, rules, as_before(table, step.spec, _saved(conn, table, step.spec))))
    rows = []
    for i, (raw, where) in enumerate(zip(rules, applies)):
        wrong = sa.or_(*(table.c[k].is_distinct_from(sa.literal(v, table.c[k].type)) for k, v in raw["set"].items()))
        applying, off = conn.execute(sa.select(
            sa.func.coalesce(sa.func.sum(sa.case((where, 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((sa.and_(where, wrong), 1), else_=0)), 0),
        ).select_from(table)).one()
        rows.append({"table": step.table, "check": Rule.model_validate(raw).label(i), "rows": int(applying),
                     "rows_wrong": int(off)})
    query = step.spec.get("verify_query")
    if query:
        rows.append(_verify_query(conn, table, applies, rules, query))
    return rows


def _verify_query(conn, table: sa.Table, applies, rules: list[dict], query: dict) -> dict:
    """The downstream consumer's own selection (e.g. the sync engine's) picks exactly the rows of
    the rules named in `expect_rules`, and no others."""
    picked = sa.and_(*(table.c[c].in_(v) if isinstance(v, list) else table.c[c] == v
                       for c, v in query["where"].items()))
    wanted_labels = set(query["expect_rules"])
    wanted = sa.or_(sa.false(), *(a for i, a in enumerate(applies)
                                  if Rule.model_validate(rules[i]).label(i) in wanted_labels))
    picked_n, stray, missed = conn.execute(sa.select(
        sa.func.coalesce(sa.func.sum(sa.case((picked, 1), else_=0)), 0),
        sa.func.coalesce(sa.func.sum(sa.case((sa.and_(picked, sa.not_(wanted)), 1), else_=0)), 0),
        sa.func.coalesce(sa.func.sum(sa.case((sa.and_(wanted, sa.not_(picked)), 1), else_=0)), 0),
    ).select_from(table)).one()
    return {"table": table.fullname, "check": f"consumer query {query['where']}", "rows": int(picked_n),
            "rows_wrong": int(stray) + int(missed)}


def restore(engine: sa.Engine, ledger, run, plan: PhasePlan, archive_dir=None):
    """Put the saved previous values back, newest batch first, one transaction per batch."""
    from ..undo import RestoreReport

    step = plan.steps[0]
    restored = batches = 0
    for batch in reversed(ledger.archived_batches(run.run_id)):
        with engine.begin() as conn:
            table = reflect_table(conn, step.table)
            previous = reflect_table(conn, batch.archive)
            restored += _put_back(conn, table, previous, step, run.run_id, batch.batch_no)
            ledger.mark_restored(conn, run.run_id, batch.batch_no)
        batches += 1
    detail = f"put back the previous values of {restored:,} rows"
    return RestoreReport(run.run_id, plan.phase, batches, run.rows_done, restored, 0, detail=detail)


def put_back_statement(table: sa.Table, previous: sa.Table, step: Step, run_id: str, batch_no: int) -> sa.Update:
    """One joined UPDATE per batch: UPDATE t SET c = p.c FROM previous p WHERE p is this run and
    batch's saved row of t's key (T-SQL: UPDATE t SET ... FROM t, previous WHERE ...). Each saved
    row is found by the join, not by a subquery per column and row."""
    keys = [table.c[k] for k in step.key]
    return (sa.update(table)
            .where(previous.c[RUN_ID] == run_id, previous.c[BATCH_NO] == batch_no,
                   *(previous.c[k.name] == k for k in keys))
            .values({name: previous.c[name] for name in step.spec["columns"]}))


def _put_back(conn, table: sa.Table, previous: sa.Table, step: Step, run_id: str, batch_no: int) -> int:
    """The batch's values back; its saved rows go (they describe a reset that is undone now)."""
    rows = conn.execute(put_back_statement(table, previous, step, run_id, batch_no)).rowcount
    conn.execute(sa.delete(previous).where(previous.c[RUN_ID] == run_id, previous.c[BATCH_NO] == batch_no))
    return rows


class Reset(Kind):
    name = "reset"
    Config = Config
    changes_rows_in_place = True

    build_plan = staticmethod(build_plan)
    selection = staticmethod(selection)
    verify = staticmethod(verify)

    def change(self, ctx, table, step):
        """Update the window's rows to their rule's values, saving the previous ones first."""
        previous = ensure_table(ctx.engine, previous_table_for(table, step.spec), table)
        return ResetChange(ctx.dialect, table, previous, key_columns(table, step), step.spec)

    restore = staticmethod(restore)
