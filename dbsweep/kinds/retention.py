"""Kind `retention`: delete rows older than a cutoff (optionally narrowed by a `where`)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Literal

import sqlalchemy as sa
from pydantic import Field, model_validator

from .. import inbound
from ..archive import NoArchive, archive_table_for
from ..catalog import column, has_table, reflect_table, split_name, time_column
from ..dialects import Dialect
from ..durations import parse_duration
from ..errors import BadInput, DbsweepError
from ..findings import WARN, Finding, age
from ..inbound import InboundKey
from ..keys import from_json, up_to_key
from ..plan import PhasePlan, Step, as_utc
from ..phase_config import Duration, PhaseBase, ServerTimeout, Strict, TableName, Where
from ..predicate import checked_where, where_clause
from .base import Kind
from .common import PlanParts, key_columns, walk_step
from .partitioned import ARCHIVE_SCHEMA, PARTITION, PartitionWalker, partition_steps, reattach_partitions
from ..dialects import pg_rebuild
from .rebuild import DROP_BACKUP, REBUILD, DropBackupWalker, Recorded, kept_backups, rebuild_blockers, restore_rebuilds
from .retention_rebuild import WORD, RetentionRebuildWalker, copy_walk, rebuild_names

DELETE, AUTO = "delete", "auto"
# auto rebuilds above this share of the table due: bench/purge_rebuild.py measured the break-even
# (a plain DELETE won at 50% due, the copy and swap at 90%)
REBUILD_ABOVE = 0.7

AGE_BUCKETS = [("<1d", 1), ("1-7d", 7), ("7-30d", 30), ("30-90d", 90), ("90d-1y", 365), ("1-2y", 730), (">2y", None)]


class Backfill(Strict):
    """Windows of `time_column`, from `start`, each purged by its own plan and run."""

    start: date
    window: Literal["day", "week", "month"] = "month"


class Config(PhaseBase):
    kind: Literal["retention"]
    table: TableName
    time_column: str
    older_than: Duration | None = None
    cutoff: datetime | None = None
    where: Where | None = None
    partition_fast_path: bool = True  # PostgreSQL range partitions on time_column go whole when wholly expired
    keep_if_referenced_by: list[str] = []  # "table.column" (or schema.table.column): rows it points at stay
    # "blocks": walk heap-block ranges (PostgreSQL TID range scans) even when there is a key: sequential
    # reads, about as fast as one DELETE; a selected row updated into an already-swept block stays
    walk: Literal["key", "blocks"] = "key"
    backfill: Backfill | None = None  # time windows (Dagster partitions) to purge a long history one at a time
    # "rebuild" (PostgreSQL): copy the rows that stay into a new table and swap it in; "auto" rebuilds
    # when more than rebuild_above of the table is due and nothing blocks it, else deletes in batches
    strategy: Literal["delete", "auto", "rebuild"] = DELETE
    rebuild_above: float = Field(default=REBUILD_ABOVE, ge=0, le=1)
    keep_backup: Duration = "7 days"  # a rebuild's old table (archive = "table"), kept for restore
    swap_lock_timeout: ServerTimeout = "500 ms"  # the longest a rebuild's swap makes writers wait

    @model_validator(mode="after")
    def _one_cutoff(self) -> Config:
        if (self.older_than is None) == (self.cutoff is None):
            raise ValueError("give exactly one of 'older_than' or 'cutoff'")
        if self.cutoff is not None and as_utc(self.cutoff) > datetime.now(timezone.utc):
            raise ValueError(f"cutoff {self.cutoff.isoformat()} is in the future")
        return self


def _column_moment(col: sa.Column, moment: datetime):
    """Compare like with like: aware for timestamptz, naive UTC for timestamp without time zone,
    the UTC date for a date column."""
    if isinstance(col.type, sa.Date) and not isinstance(col.type, sa.DateTime):
        return moment.astimezone(timezone.utc).date()
    if getattr(col.type, "timezone", False):
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def selection(table: sa.Table, step: Step) -> sa.ColumnElement:
    time_col = table.c[step.spec["time_column"]]
    cutoff = _column_moment(time_col, datetime.fromisoformat(step.spec["cutoff"]))
    clauses = [time_col < cutoff]
    if step.spec.get("window"):
        start, end = (_column_moment(time_col, datetime.fromisoformat(t)) for t in step.spec["window"])
        clauses += [time_col >= start, time_col < end]
    if step.spec.get("where") is not None:
        clauses.append(where_clause(step.spec, table))
    for keep in step.spec.get("keep", []):
        referrer = sa.table(keep["table"], sa.column(keep["column"]), schema=keep["schema"])
        clauses.append(~sa.exists(sa.select(sa.literal(1)).select_from(referrer)
                                  .where(referrer.c[keep["column"]] == table.c[keep["refers_to"]])))
    clauses += inbound.unreferenced(table, step.spec.get("guard", []))  # referenced since the plan: kept
    return sa.and_(*clauses)


def _keep_rules(conn: sa.Connection, table: sa.Table, references: list[str]) -> list[dict]:
    """keep_if_referenced_by entries, checked against the catalog: the referring column and the
    column of `table` it points at (its foreign key's target, else the single-column primary key)."""
    rules = []
    for reference in references:
        qualified, dot, name = reference.rpartition(".")
        if not dot or not qualified:
            raise BadInput(f"keep_if_referenced_by {reference!r}: expected table.column")
        referrer = reflect_table(conn, qualified)
        column(referrer, name, "keep_if_referenced_by")
        target = None
        for fk in sa.inspect(conn).get_foreign_keys(referrer.name, schema=referrer.schema):
            if fk["constrained_columns"] == [name] and fk["referred_table"] == table.name:
                target = fk["referred_columns"][0]
        if target is None:
            keys = list(table.primary_key.columns)
            if len(keys) != 1:
                raise BadInput(f"keep_if_referenced_by {reference!r}: no foreign key to '{table.fullname}' and no "
                               "single-column primary key to compare with")
            target = keys[0].name
        rules.append({"schema": referrer.schema, "table": referrer.name, "column": name, "refers_to": target})
    return rules


def _guarded_keys(conn: sa.Connection, dialect: Dialect, table: sa.Table, keep: list[dict]) -> list[InboundKey]:
    """The foreign keys into the table that keep_if_referenced_by does not already keep rows for."""
    kept = {(k["schema"], k["table"], k["column"]) for k in keep}
    return [fk for fk in inbound.keys_into(conn, dialect, table)
            if not (len(fk.columns) == 1 and {(fk.schema, fk.table, fk.columns[0]), (None, fk.table, fk.columns[0])} & kept)]


def _keep_hint(fk: InboundKey) -> str:
    return f"keep them with keep_if_referenced_by = [\"{fk.where}.{fk.columns[0]}\"]"


def _rule(cfg: Config, conn: sa.Connection, dialect: Dialect, table: sa.Table, now: datetime):
    """The time column, the cutoff, and the spec `selection` rebuilds the rule from, all checked
    against the live catalog."""
    time_col = time_column(table, cfg.time_column)
    cutoff = as_utc(cfg.cutoff) if cfg.cutoff else now - parse_duration(cfg.older_than)
    if cutoff > now:
        raise BadInput(f"cutoff {cutoff.isoformat()} is in the future")
    where = checked_where(cfg.where, table, dialect.name) if cfg.where is not None else {"where": None}
    keep = _keep_rules(conn, table, cfg.keep_if_referenced_by)
    spec = {"time_column": time_col.name, "cutoff": cutoff.isoformat(), **where, "keep": keep,
            "guard": [fk.spec() for fk in _guarded_keys(conn, dialect, table, keep)]}
    return time_col, cutoff, spec


def _due(cfg: Config, conn: sa.Connection, dialect: Dialect, now: datetime):
    """(table, time column, cutoff, spec, the rule's selection now), as health reads them."""
    table = reflect_table(conn, cfg.table)
    time_col, cutoff, spec = _rule(cfg, conn, dialect, table, now)
    return table, time_col, cutoff, spec, selection(table, Step(table=table.fullname, walk="key", rows_selected=0,
                                                                batch_size=1, spec=spec))


def oldest(cfg: Config, conn: sa.Connection, dialect: Dialect, now: datetime) -> tuple[datetime | None, datetime | None]:
    """The oldest row the rule would delete now, and the oldest row of all (a kept one may be
    older): min() of the time column, an index's first entry when there is one."""
    table, time_col, _, spec, due = _due(cfg, conn, dialect, now)
    row = conn.execute(sa.select(sa.select(sa.func.min(time_col)).where(due).scalar_subquery(),
                                 sa.select(sa.func.min(time_col)).scalar_subquery())).one()
    return _as_utc(row[0]), _as_utc(row[1])


def kept_though_old(cfg: Config, conn: sa.Connection, dialect: Dialect, now: datetime) -> tuple[int, list[str]]:
    """How many rows older than the cutoff the rule keeps, and what keeps them (the policy's
    `where`, keep_if_referenced_by, foreign keys into the table)."""
    table, time_col, cutoff, spec, due = _due(cfg, conn, dialect, now)
    older = time_col < _column_moment(time_col, cutoff)
    kept = conn.execute(sa.select(sa.func.count()).select_from(table).where(older, ~due)).scalar()
    why = ([f"not matching the policy's where: {spec['where']}"] if spec.get("where") is not None else [])
    why += [f"referenced by {keep['table']}.{keep['column']} (keep_if_referenced_by)" for keep in spec.get("keep", [])]
    why += [f"referenced through foreign key {guard['name']} of {guard['table']}" for guard in spec.get("guard", [])]
    return kept, why


def build_plan(cfg: Config, conn: sa.Connection, dialect: Dialect, now: datetime,
               window: tuple[datetime, datetime] | None = None) -> PlanParts:
    """`window`: only rows with start <= time_column < end (one backfill window), still older
    than the cutoff."""
    table = reflect_table(conn, cfg.table)
    time_col, cutoff, spec = _rule(cfg, conn, dialect, table, now)
    if window is not None:
        spec["window"] = [as_utc(moment).isoformat() for moment in window]
    probe = Step(table=table.fullname, walk="key", rows_selected=0, batch_size=cfg.start_batch_size, spec=spec)
    chosen = selection(table, probe)

    def count_if(condition):
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    buckets, lower = [], None
    for label, days in AGE_BUCKETS:
        upper = None if days is None else _column_moment(time_col, now - timedelta(days=days))
        cond = sa.and_(*(c for c in (time_col >= upper if upper is not None else None,
                                      time_col < lower if lower is not None else None) if c is not None))
        buckets.append(count_if(cond).label(label))
        lower = upper
    row = conn.execute(sa.select(
        sa.func.count().label("rows_total"), count_if(chosen).label("rows_selected"),
        sa.func.min(sa.case((chosen, time_col))).label("oldest"), sa.func.max(sa.case((chosen, time_col))).label("newest"),
        *buckets,
    ).select_from(table)).one()
    rows_total, rows_selected = int(row.rows_total), int(row.rows_selected)
    table_bytes = dialect.table_bytes(conn, table)
    fraction = rows_selected / rows_total if rows_total else 0.0
    profile = {
        "table": table.fullname,
        "rows_total": rows_total,
        "rows_selected": rows_selected,
        "fraction_selected": fraction,
        "oldest_selected": _as_utc(row.oldest),
        "newest_selected": _as_utc(row.newest),
        "cutoff": cutoff,
        "est_bytes": int(table_bytes * fraction) if table_bytes is not None else None,
    }
    guarded = [InboundKey.from_spec(k) for k in spec["guard"]]
    unguarded = selection(table, probe.model_copy(update={"spec": {**spec, "guard": []}}))
    profile["blockers"] = "; ".join(inbound.blockers(conn, table, unguarded, guarded, "selected rows", _keep_hint)) or "none"
    if window is not None:
        profile["window"] = " to ".join(spec["window"])
    if cfg.archive == "table":  # the name dbsweep derives, shown before anything is written there
        profile["writes"] = archive_table_for(table).fullname
    steps = None
    if cfg.partition_fast_path and not spec["keep"] and not spec["guard"] and window is None:  # a kept row may sit anywhere
        steps = partition_steps(conn, dialect, table, time_col, cutoff, spec, cfg.start_batch_size, selection,
                                cfg.walk)
        if steps is not None:
            profile["whole_partitions"] = [s.table for s in steps if s.walk == PARTITION]
    if steps is None:
        strategy, profile["why"] = _strategy(cfg, conn, dialect, table, spec, fraction, window)
        profile["strategy"] = strategy
        step = walk_step(conn, dialect, table, chosen, rows_selected, cfg.start_batch_size, spec,
                         "key" if strategy == REBUILD else cfg.walk)
        if strategy == REBUILD:
            names = rebuild_names(conn, table, now)
            step = step.model_copy(update={"walk": REBUILD, "spec": {
                **spec, "names": names, "archive": cfg.archive, "lock_timeout_swap_s": cfg.seconds("swap_lock_timeout"),
                "copy_walk": copy_walk(dialect.indexes(conn, table), spec,
                                       pg_rebuild.correlation(conn, table, spec["time_column"]))}})
            if cfg.archive == "table":
                profile["writes"] = f"{table.schema}.{names['backup']}" if table.schema else names["backup"]
        steps = [step]
    dropping, profile["backups"] = _backups(conn, cfg, table, spec, now)
    steps = dropping + steps
    return PlanParts(
        steps=steps, profile=[profile], cutoff=cutoff,
        histogram={label: int(row._mapping[label]) for label, _ in AGE_BUCKETS},
        expect={
            "max_rows": cfg.expect.max_rows if cfg.expect.max_rows is not None else rows_total,
            "max_fraction": cfg.expect.max_fraction if cfg.expect.max_fraction is not None else 1.0,
            "min_rows": cfg.expect.min_rows,
        },
    )


def _strategy(cfg: Config, conn, dialect: Dialect, table: sa.Table, spec: dict, fraction: float,
              window) -> tuple[str, str]:
    """(delete or rebuild, why), from the share of the table due and what a rebuild could not carry."""
    if cfg.strategy == DELETE:  # said only when the other strategy may be faster
        return DELETE, "" if fraction <= cfg.rebuild_above else (
            f"{fraction:.1%} of the table is due: strategy = \"auto\" would copy what stays into a new table instead "
            "of deleting, when nothing blocks a swap (faster above about 70% due)")
    found = rebuild_blockers(conn, dialect, table)
    blocked = [f"it needs PostgreSQL, not {dialect.name}"] if found is None else list(found)
    if found is not None:
        blocked[:0] = [why for why, applies in (
            ("a backfill window (each window is a run of its own)", window is not None),
            ("keep_if_referenced_by (a row may become referenced while the copy runs)", bool(spec["keep"])),
            ("no primary key (writes made meanwhile are replayed by it)", not list(table.primary_key.columns)),
        ) if applies]
    if cfg.strategy == REBUILD:
        if blocked:
            raise BadInput(f"key 'strategy': \"rebuild\" cannot be used on '{table.fullname}': {blocked[0]}; "
                           "use \"delete\" or \"auto\"")
        return REBUILD, "forced by the policy"
    due = f"{fraction:.1%} of the table is due"
    if fraction <= cfg.rebuild_above:
        return DELETE, f"{due} (rebuild above {cfg.rebuild_above:.0%})"
    if blocked:
        return DELETE, f"{due}, but a rebuild cannot carry {blocked[0]}"
    return REBUILD, f"{due}: copying the {1 - fraction:.1%} that stays writes less than deleting"


def _backups(conn, cfg: Config, table: sa.Table, spec: dict, now: datetime) -> tuple[list[Step], str]:
    """Earlier rebuilds' backups: steps dropping those past keep_backup, and what the plan says of all."""
    key = [c.name for c in table.primary_key.columns]
    found = kept_backups(conn, table, WORD, parse_duration(cfg.keep_backup), now, spec, key)
    said = "; ".join(f"{'drop' if b.step else 'keep'} {b.name} ({b.rows:,} rows; "
                     f"{b.why.replace('keep_backup', f'keep_backup {cfg.keep_backup}')})" for b in found)
    return [b.step for b in found if b.step is not None], said or "none"


def _as_utc(value):
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time.min)
    return as_utc(value)


def _attached(conn: sa.Connection, qualified: str) -> bool:
    schema, name = split_name(qualified)
    return has_table(conn, name, schema)


def verify(conn: sa.Connection, dialect: Dialect, plan: PhasePlan) -> list[dict]:
    """Nothing the plan selected remains (within its frozen key range); survivors are counted."""
    rows = []
    for step in plan.steps:
        if step.walk == DROP_BACKUP:
            continue
        if step.walk == PARTITION and not _attached(conn, step.table):
            rows.append({"table": step.table, "rows_now": 0, "remaining_selected": 0, "remaining_matching": 0})
            continue
        table = reflect_table(conn, step.table)
        chosen = selection(table, step)
        in_range = chosen
        if step.walk in ("key", "block", REBUILD) and step.key and step.last_key is not None:
            keys = key_columns(table, step)
            in_range = sa.and_(chosen, up_to_key(keys, from_json(keys, step.last_key)))
        result = conn.execute(sa.select(
            sa.func.count().label("rows_now"),
            sa.func.coalesce(sa.func.sum(sa.case((in_range, 1), else_=0)), 0).label("remaining_selected"),
            sa.func.coalesce(sa.func.sum(sa.case((chosen, 1), else_=0)), 0).label("remaining_matching"),
        ).select_from(table)).one()
        rows.append({
            "table": step.table,
            "rows_now": int(result.rows_now),
            "remaining_selected": int(result.remaining_selected),
            "remaining_matching": int(result.remaining_matching),
        })
    return rows


class Retention(Kind):
    name = "retention"
    Config = Config
    windowed = True

    build_plan = staticmethod(build_plan)
    selection = staticmethod(selection)
    verify = staticmethod(verify)

    def backfill(self, cfg):
        return cfg.backfill

    def dry_run(self, plan, batch_size):
        lines = super().dry_run(plan, batch_size)
        for line, step in zip(lines, plan.steps):
            if step.walk == REBUILD:
                line.transactions, line.batch_size = line.transactions + 4, None
                line.action = ("the rows that stay are copied into a new table in key order while a trigger logs "
                               "what writers do, which is replayed; one short lock swaps the tables"
                               + {"table": "; the old table stays as the backup until keep_backup has passed",
                                  "parquet": "; the removed rows go from the old table to Parquet, then it is dropped",
                                  "none": "; the old table is dropped at once"}[step.spec["archive"]])
            if step.walk == DROP_BACKUP:
                line.transactions, line.batch_size = 1, None
                line.action = f"drop the backup {step.spec['backup']} (keep_backup has passed; not undoable)"
            if step.walk == PARTITION:
                line.transactions, line.batch_size = 1, None
                line.action = ("the whole partition goes at once (detach, then drop, or move to schema "
                               f"{ARCHIVE_SCHEMA} when archiving)")
        return lines

    def walker(self, ctx, table, step, cursor):
        if step.walk == REBUILD:
            cutoff = _column_moment(table.c[step.spec["time_column"]], datetime.fromisoformat(step.spec["cutoff"]))
            return RetentionRebuildWalker(ctx, table, step, Recorded(), cursor, selection, cutoff)
        if step.walk == DROP_BACKUP:
            return DropBackupWalker(table, step, Recorded())
        if step.walk == PARTITION:
            return PartitionWalker(ctx.dialect, table, step, NoArchive(), ctx.options.archive != "none")
        return super().walker(ctx, table, step, cursor)

    def restore(self, engine, ledger, run, plan, archive_dir):
        from ..undo import restore_archived, rows_put_back

        rebuilt = restore_rebuilds(engine, ledger, run, plan, lambda step: lambda backup, _: selection(backup, step))
        partitions, whole_rows = reattach_partitions(engine, ledger, run)
        rows = restore_archived(engine, ledger, run, plan, archive_dir)
        report = rows_put_back(run.run_id, plan.phase, partitions + rows.batches + rebuilt.batches,
                               whole_rows + rows.rows_archived + rebuilt.archived,
                               whole_rows + rows.rows_restored + rebuilt.rows)
        report.detail = "; ".join([*rebuilt.said, report.detail])
        return report

    def measures(self, cfg, conn, dialect, now) -> dict[str, float]:
        table = reflect_table(conn, cfg.table)
        _, cutoff, spec = _rule(cfg, conn, dialect, table, now)
        due = selection(table, Step(table=table.fullname, walk="key", rows_selected=0, batch_size=1, spec=spec))
        rows_due = conn.execute(sa.select(sa.func.count()).select_from(table).where(due)).scalar()
        first_due, first = oldest(cfg, conn, dialect, now)
        return {"rows_due": float(rows_due),
                "oldest_row_age_seconds": (now - first).total_seconds() if first is not None else 0.0,
                # how far past the retention the oldest row the rule deletes is (kept rows do not count)
                "oldest_row_overdue_seconds": (cutoff - first_due).total_seconds() if first_due is not None else 0.0}

    def gauges(self, cfg, conn, dialect, now, latest, done) -> dict[str, float]:
        """Rows due as the latest plan (or `check`) counted them, less what its runs deleted since,
        with that count's age; the oldest row from the time column's index alone (min() is its first
        entry), when an index leads with it."""
        out = {}
        if latest is not None:
            out["rows_due"] = float(max(latest.rows_selected - done, 0))
            out["rows_due_age_seconds"] = (now - latest.created_at).total_seconds()
        table = reflect_table(conn, cfg.table)
        indexed = any(ix["columns"][:1] == [cfg.time_column] for ix in dialect.indexes(conn, table))
        if indexed:
            first = _as_utc(conn.execute(sa.select(sa.func.min(table.c[cfg.time_column]))).scalar())
            out["oldest_row_age_seconds"] = (now - first).total_seconds() if first is not None else 0.0
        return out

    def health(self, cfg, conn, dialect, now, tables_found) -> list[Finding]:
        """The oldest row the rule would delete now (a cleanup is due), else the oldest row of all
        (rows kept by `where` or `keep_if_referenced_by` may be older than the cutoff)."""
        if cfg.table not in tables_found:
            return []
        try:
            due, first = oldest(cfg, conn, dialect, now)
        except DbsweepError as exc:
            return [Finding("retention", cfg.name, str(exc), WARN)]
        rule = cfg.older_than or f"before {cfg.cutoff:%Y-%m-%d}"
        if due is not None:
            return [Finding("retention", cfg.name, f"due: the oldest row the rule ({rule}) deletes is "
                            f"{age(now - due)} old; `dbsweep plan` counts them", WARN)]
        if first is None:
            return [Finding("retention", cfg.name, f"{cfg.table} is empty")]
        kept, why = kept_though_old(cfg, conn, dialect, now)
        if kept:
            return [Finding("retention", cfg.name, f"nothing due ({rule}); {kept:,} older rows kept ({'; '.join(why)}); "
                            f"oldest row {age(now - first)} old")]
        return [Finding("retention", cfg.name, f"nothing due ({rule}); oldest row {age(now - first)} old")]
