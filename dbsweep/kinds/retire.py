"""Kind `retire`: drop obsolete tables only after proving they are unused (seed 001: the DELTA
tables). Step one renames the table to `<name>__retired_<yyyymmdd>` (the gradual disable: anything
still using it fails loudly, and `dbsweep restore` renames it back); step two, a later run of the
same phase once `grace` has passed, drops it (or, with archive, moves it to schema dbsweep_archive).
Preconditions are read from the catalog when planning and again inside the change's transaction."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from pydantic import Field, field_validator

from ..archive import NoArchive
from ..catalog import dated_copies, has_table, reflect_table, resolve_name, split_name
from ..dialects import Dialect, dialect_for
from ..durations import parse_duration
from ..errors import BadInput, GateRefused
from ..ledger import NOT_UNDOABLE_KEY, Ledger
from ..names import derived
from ..plan import PhasePlan, Step
from ..phase_config import Duration, PhaseBase, TableName
from ..walkers import Walker
from .base import DryRunLine, Kind
from .common import PlanParts
from .partitioned import ARCHIVE_SCHEMA

RETIRED = "__retired_"
CODE_SUFFIXES = {".py", ".sql", ".toml", ".yaml", ".yml", ".json", ".js", ".ts", ".java", ".cs", ".go", ".rb", ".sh",
                 ".ps1", ".md", ".txt", ".cfg", ".ini", ".xml"}
NONE = "none"
NOT_CHECKED = "not checked: code_paths names no folder"  # no blocker, and no claim that none was found


class Config(PhaseBase):
    kind: Literal["retire"]
    tables: list[TableName] = Field(min_length=1)
    grace: Duration = "7 days"
    code_paths: list[str] = []  # folders searched for the table names; relative to the policy file

    @field_validator("archive", mode="before")
    @classmethod
    def _archive_flag(cls, value):
        if isinstance(value, bool):
            return "table" if value else "none"
        if value == "parquet":
            raise ValueError("a retired table is archived whole, by moving it to schema dbsweep_archive: "
                             "use archive = true")
        return value




def retired_name(base: str, on: datetime) -> str:
    """`<base>__retired_<yyyymmdd>`, its base shortened (with a hash) when that would not fit."""
    return derived(base, f"{RETIRED}{on:%Y%m%d}")


def _retired_copies(conn: sa.Connection, schema: str | None, base: str) -> list[tuple[str, datetime]]:
    return dated_copies(conn, schema, base, RETIRED, "%Y%m%d")


def preconditions(conn: sa.Connection, dialect: Dialect, table: sa.Table, label: str, archive: bool,
                  code_paths: list[Path], names: list[str]) -> list[dict]:
    """One row per check; `found` is "none" when the check passes, else what blocks the retire."""
    rows = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
    found = {
        "empty (or archived)": [] if rows == 0 or archive else [f"{rows:,} rows"],
        "no inbound foreign key": dialect.inbound_foreign_keys(conn, table),
        "no dependent view": dialect.dependent_views(conn, table),
        "no routine or trigger using it": dialect.dependent_routines(conn, table, names),
        "no code reference": code_references(code_paths, names),
    }
    rows = [{"table": label, "check": check, "found": "; ".join(items) if items else NONE} for check, items in found.items()]
    if not code_paths:
        rows[-1]["found"] = NOT_CHECKED
    return rows


def code_references(paths: list[Path], names: list[str], limit: int = 20) -> list[str]:
    """`file:line` of each whole-word, case-insensitive mention of any of `names`."""
    pattern = re.compile(r"(?<![\w])(" + "|".join(re.escape(n) for n in names) + r")(?![\w])", re.IGNORECASE)
    hits = []
    for root in paths:
        if not root.exists():
            raise BadInput(f"code_paths: folder {root} does not exist")
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix.lower() in CODE_SUFFIXES)
        for path in files:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            for number, line in enumerate(text.splitlines(), 1):
                if pattern.search(line):
                    hits.append(f"{path}:{number}")
                    if len(hits) >= limit:
                        return hits
    return hits


def build_plan(cfg: Config, conn: sa.Connection, dialect: Dialect, now: datetime,
               window=None) -> PlanParts:
    grace = parse_duration(cfg.grace)
    if cfg.archive != "none" and (why := dialect.cannot_move_tables(conn)):
        raise BadInput(f"archive = true moves each retired table to schema {ARCHIVE_SCHEMA} when it is dropped: {why}; "
                       "nothing was changed")
    code_paths = [(cfg.base_dir / p).resolve() for p in cfg.code_paths]
    steps, profile, checks = [], [], []
    for qualified in cfg.tables:
        schema, base = resolve_name(conn, qualified)
        copies = _retired_copies(conn, schema, base)
        if has_table(conn, base, schema):
            target = retired_name(base, now)
            action, name, note = "rename", qualified, f"step 1: rename to {target} (gradual disable)"
        elif copies:
            name = f"{schema}.{copies[-1][0]}" if schema else copies[-1][0]
            # from the moment the rename committed; a copy renamed outside dbsweep counts from the
            # end of the day its name gives, so the grace is never cut short
            renamed_at = Ledger(conn.engine).renamed_at(name) or copies[-1][1] + timedelta(days=1)
            due = renamed_at + grace
            if now < due:
                profile.append({"table": qualified, "action": "wait", "rows_total": None, "rows_selected": 0,
                                "due": due.isoformat(),
                                "detail": f"renamed to {name} at {renamed_at:%Y-%m-%d %H:%M:%S} UTC; drop due at "
                                          f"{due:%Y-%m-%d %H:%M:%S} UTC (grace {cfg.grace}); nothing to do before"})
                continue
            action, target, note = "drop", None, (f"step 2: drop {name} (renamed {renamed_at:%Y-%m-%d %H:%M:%S} UTC, "
                                                  "grace passed)")
        else:
            raise BadInput(f"table '{qualified}' not found, nor a retired copy {base}{RETIRED}<date>: "
                           "already dropped? remove it from the policy")
        table = reflect_table(conn, name)
        found = preconditions(conn, dialect, table, qualified, cfg.archive != "none", code_paths, [base, table.name])
        checks += found
        rows = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
        profile.append({"table": qualified, "action": action, "rows_total": rows, "rows_selected": rows,
                        "table_bytes": (size := dialect.table_bytes(conn, table)),
                        "est_bytes": size if action == "drop" else None,  # bytes it removes: none by a rename
                        "detail": note})
        spec = {"action": action, "name": table.fullname, "base": base, "target": target,
                "code_paths": [str(p) for p in code_paths]}
        steps.append(Step(table=table.fullname, walk="retire", rows_selected=rows, batch_size=1, spec=spec))
    return PlanParts(steps=steps, profile=profile, checks=checks)


def selection(table: sa.Table, step: Step) -> sa.ColumnElement:
    return sa.true()  # a retire step takes the whole table


class RetireWalker(Walker):
    """One batch per table: re-check the preconditions under the change's transaction, then rename
    or drop (or move to the archive schema)."""

    def __init__(self, dialect: Dialect, table: sa.Table, step: Step, sink, options):
        self.dialect, self.table, self.step, self.sink = dialect, table, step, sink
        self.archive = options.archive != "none"
        self.done = False

    def batch(self, conn: sa.Connection, size: int, exact: bool = False) -> tuple[int, dict | None]:
        spec = self.step.spec
        blocking = [c for c in preconditions(conn, self.dialect, self.table, spec["name"], self.archive,
                                             [Path(p) for p in spec["code_paths"]], [spec["base"], self.table.name])
                    if c["found"] not in (NONE, NOT_CHECKED)]
        if blocking:
            raise GateRefused(f"retire {spec['name']}: precondition failed since planning: "
                              + "; ".join(f"{c['check']}: {c['found']}" for c in blocking))
        rows = conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar()
        record = {"action": spec["action"], "table": spec["name"]}
        if spec["action"] == "rename":
            self.dialect.rename_table(conn, self.table, spec["target"])
            record["renamed_to"] = f"{self.table.schema}.{spec['target']}" if self.table.schema else spec["target"]
        elif self.archive:
            moved = derived(self.table.name, f"__{self.sink.run_id}")
            self.dialect.move_table(conn, self.table, ARCHIVE_SCHEMA, moved)
            record["archived_as"] = f"{ARCHIVE_SCHEMA}.{moved}"
        else:
            self.dialect.drop_table(conn, self.table)
            record[NOT_UNDOABLE_KEY] = False  # kept in the ledger as a record; status offers no restore for it
        self.sink.ref = json.dumps(record)
        return rows, None

    def advance(self, cursor: dict, rows: int, size: int) -> None:
        self.done = True


def verify(conn: sa.Connection, dialect: Dialect, plan: PhasePlan) -> list[dict]:
    """Each step's table is gone from its old name; a renamed one exists under its new name."""
    rows = []
    for step in plan.steps:
        schema, name = split_name(step.spec["name"])
        still_there = has_table(conn, name, schema)
        renamed_ok = step.spec["action"] != "rename" or has_table(conn, step.spec["target"], schema)
        rows.append({"table": step.spec["name"], "check": f"{step.spec['action']} done",
                     "rows": step.rows_selected, "rows_wrong": int(still_there) + int(not renamed_ok)})
    return rows


def restore(engine: sa.Engine, ledger, run, plan: PhasePlan, archive_dir=None):
    """Rename back, or move back from dbsweep_archive; a plain drop cannot be undone and is refused
    before anything changes."""
    from ..undo import RestoreReport

    batches = list(reversed(ledger.archived_batches(run.run_id)))
    records = [json.loads(b.archive) for b in batches]
    dropped = [r["table"] for r in records if r.get(NOT_UNDOABLE_KEY) is False]
    if dropped:
        raise BadInput(f"run {run.run_id} dropped {', '.join(dropped)} without an archive: nothing to restore from")
    dialect = dialect_for(engine)
    for batch, record in zip(batches, records):
        with engine.begin() as conn:
            schema, name = split_name(record["table"])
            if record["action"] == "rename":
                renamed = reflect_table(conn, record["renamed_to"])
                dialect.rename_table(conn, renamed, name)
            else:
                moved = reflect_table(conn, record["archived_as"])
                dialect.move_table(conn, moved, schema or dialect.default_schema(conn), name)
            ledger.mark_restored(conn, run.run_id, batch.batch_no)
    names = ", ".join(r["table"] for r in records) or "nothing"
    return RestoreReport(run.run_id, plan.phase, len(batches), run.rows_done, run.rows_done, 0,
                         detail=f"put back {names}")


class Retire(Kind):
    name = "retire"
    Config = Config

    build_plan = staticmethod(build_plan)
    selection = staticmethod(selection)
    verify = staticmethod(verify)

    def tables(self, cfg) -> list[str]:
        return list(cfg.tables)

    def gate_rows(self, plan):
        return plan.checks  # the gate judges the catalog preconditions, not volumes

    def no_undo(self, cfg, plan):
        dropped = [step.table for step in plan.steps if step.spec["action"] == "drop"]
        if dropped and cfg.archive == "none":
            return (f"it drops {', '.join(dropped)} without archive = true: nothing is kept, and `dbsweep restore` "
                    "cannot bring them back")
        return None

    def dry_run(self, plan, batch_size):
        return [DryRunLine(step.table, step.rows_selected, "retire", None, 1,
                           f"rename to {step.spec['target']}" if step.spec["action"] == "rename" else step.spec["action"])
                for step in plan.steps]

    def walker(self, ctx, table, step, cursor):
        return RetireWalker(ctx.dialect, table, step, NoArchive(), ctx.options)

    restore = staticmethod(restore)
