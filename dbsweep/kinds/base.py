"""The phase-kind interface. A kind is one module holding one `Kind` subclass; defining the class
registers it under its `name`. Service, executor, restore, report, health and the Dagster layer
talk to kinds only through this class, so a new kind touches nothing else.

Required: `name`, `Config`, `build_plan`, `selection`, `verify`, and the kind's two Great
Expectations suites, `expectations/suites/<name>_gate.json` and `<name>_verify.json`. Everything
else has a default that fits a kind deleting selected rows of one table in batches."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa

from ..dialects import Dialect
from ..errors import BadInput
from ..plan import PhasePlan, Step
from ..phase_config import PhaseBase
from .common import PlanParts


@dataclass
class DryRunLine:
    """What a dry run says of one table: rows, how it is walked, the transactions to expect."""

    table: str
    rows: int
    walk: str  # words for people: "key", "block", "cascade child", ...
    batch_size: int | None
    transactions: int
    action: str = ""  # a catalog action in words (retire), else empty


class Kind:
    registry: ClassVar[dict[str, Kind]] = {}

    name: ClassVar[str]
    Config: ClassVar[type[PhaseBase]]
    windowed: ClassVar[bool] = False  # plans can be cut into time windows (backfills, `--window`)
    changes_rows_in_place: ClassVar[bool] = False  # rows stay (reset): the table's row count does not drop

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name in Kind.registry:
            raise TypeError(f"phase kind {cls.name!r} is defined twice")
        Kind.registry[cls.name] = cls()

    @property
    def gate_suite(self) -> str:
        """The suite that gates a plan (judging `gate_rows`)."""
        return f"{self.name}_gate"

    @property
    def verify_suite(self) -> str:
        """The suite that judges `verify`'s rows after a run."""
        return f"{self.name}_verify"

    # required -----------------------------------------------------------------------------
    def build_plan(self, cfg, conn: sa.Connection, dialect: Dialect, now: datetime,
                   window: tuple[datetime, datetime] | None = None) -> PlanParts:
        """Discovery: check the phase against the live catalog, profile it, freeze its steps."""
        raise NotImplementedError

    def selection(self, table: sa.Table, step: Step) -> sa.ColumnElement:
        """The rows a step changes, rebuilt from the frozen plan alone."""
        raise NotImplementedError

    def verify(self, conn: sa.Connection, dialect: Dialect, plan: PhasePlan) -> list[dict]:
        """Post-conditions, one row per table, for the kind's verification suite."""
        raise NotImplementedError

    # defaults -----------------------------------------------------------------------------
    def cannot_run_on(self, dialect_name: str) -> str | None:
        """Why no phase of this kind can run on this database (refused before planning, and
        discovery drafts none there), or None."""
        return None

    def tables(self, cfg) -> list[str]:
        """The tables the phase touches (health, reports)."""
        return [cfg.table]

    def gate_rows(self, plan: PhasePlan) -> list[dict]:
        """What the gate suite judges: the profile (retire: its catalog preconditions)."""
        return plan.profile

    def dry_run(self, plan: PhasePlan, batch_size: int | None) -> list[DryRunLine]:
        """One line per step: its rows, walked in batches of the given (or planned) size."""
        lines = []
        for step in plan.steps:
            size = batch_size or step.batch_size
            lines.append(DryRunLine(step.table, step.rows_selected, step.walk, size,
                                    math.ceil(step.rows_selected / size) if size else 0))
        return lines

    def walker(self, ctx, table: sa.Table, step: Step, cursor: dict):
        """How a step's batches are walked (see `dbsweep.walkers`), each doing `change` to its window."""
        from ..walkers import table_walker

        return table_walker(ctx, table, step, self.selection(table, step), self.change(ctx, table, step), cursor)

    def change(self, ctx, table: sa.Table, step: Step):
        """What a batch does to the rows of its window: delete them, archived as the phase says."""
        from ..archive import make_archive

        return make_archive(ctx.options.archive, ctx.engine, ctx.dialect, table, ctx.options.archive_dir)

    def restore(self, engine: sa.Engine, ledger, run, plan: PhasePlan, archive_dir: Path):
        """Undo a run: put its archived rows back."""
        from ..undo import restore_archived

        return restore_archived(engine, ledger, run, plan, archive_dir)

    def no_undo(self, cfg, plan: PhasePlan) -> str | None:
        """Why `dbsweep restore` could not undo what this plan changes (said by plan, dry run and
        run; a protected env's real run needs it acknowledged), or None when it can."""
        if cfg.archive == "none" and not self.changes_rows_in_place and plan.rows_selected:
            return (f"archive = 'none': the {plan.rows_selected:,} rows it deletes are kept nowhere, and "
                    "`dbsweep restore` cannot bring them back")
        return None

    def backfill(self, cfg):
        """The time windows (`Backfill`) a windowed phase declares for Dagster backfills, if any."""
        return None

    def measures(self, cfg, conn: sa.Connection, dialect: Dialect, now: datetime) -> dict[str, float]:
        """Numbers of the kind's own, exact, for alerts (retention: the oldest row's age and the rows
        due now). Keys are metric names without the `dbsweep_` prefix."""
        return {}

    def gauges(self, cfg, conn: sa.Connection, dialect: Dialect, now: datetime, latest: PhasePlan | None,
               done: int) -> dict[str, float]:
        """What the exporter serves of the kind's own at every scrape: milliseconds whatever the
        table's size, never a scan (figures of the phase's `latest` plan, less the `done` rows its
        runs changed since, with their age; index-only bounds)."""
        return {}

    def health(self, cfg, conn: sa.Connection, dialect: Dialect, now: datetime, tables_found: set[str]) -> list[Any]:
        """Findings of the kind's own for `dbsweep health` (retention: what is due); `tables_found`
        are the policy's tables that exist."""
        return []


def kind_named(name: str | None) -> Kind:
    from . import all_kinds

    all_kinds()
    if name in Kind.registry:
        return Kind.registry[name]
    known = sorted(Kind.registry)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise BadInput(f"unknown kind {name!r} (expected one of: {', '.join(known)}){hint}")
