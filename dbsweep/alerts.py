"""[alerts] thresholds, evaluated against the live database and the ledger: the lines of
`dbsweep check`, the Dagster health asset's alert checks, and what the sensors deliver."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from .catalog import reflect_table
from .dialects import dialect_for
from .durations import parse_duration
from .errors import DbsweepError
from .health import EXACT_COUNT_BELOW, policy_tables
from .kinds import kind_named
from .ledger import FAILED, REFUSED, STOPPED, Ledger
from .policy import Policy
from .report import human_bytes
from .target import Target

ALERTS = ("rows_due", "oldest_row", "dead_tuples", "table_bytes", "blocked_sessions", "run_failed")


@dataclass
class AlertResult:
    alert: str  # one of ALERTS
    subject: str  # a phase, a table, or the server
    fired: bool
    severity: str  # warn | error
    text: str


def evaluate(policy: Policy, target: Target) -> list[AlertResult]:
    """Every configured alert, one result per subject it looks at (fired or not)."""
    rules, found = policy.alerts, []
    now = datetime.now(timezone.utc)
    with target.engine.connect() as conn:
        dialect = dialect_for(conn)
        if rules.rows_due or rules.oldest_row:
            for phase in policy.phases:
                try:
                    measured = kind_named(phase.kind).measures(phase, conn, dialect, now)
                except DbsweepError:
                    continue
                if rules.rows_due and "rows_due" in measured:
                    due = int(measured["rows_due"])
                    found.append(AlertResult("rows_due", phase.name, due > rules.rows_due.max, rules.rows_due.severity,
                                             f"{due:,} rows due (alert above {rules.rows_due.max:,})"))
                if rules.oldest_row and "oldest_row_overdue_seconds" in measured:
                    overdue = measured["oldest_row_overdue_seconds"]
                    grace = parse_duration(rules.oldest_row.grace).total_seconds()
                    found.append(AlertResult("oldest_row", phase.name, overdue > grace, rules.oldest_row.severity,
                                             f"oldest row due {overdue / 3600:,.1f} h past the retention "
                                             f"(alert beyond a grace of {rules.oldest_row.grace})"))
        if rules.dead_tuples or rules.table_bytes:
            for name in policy_tables(policy):
                try:
                    table = reflect_table(conn, name)
                except DbsweepError:
                    continue
                stats = dialect.table_stats(conn, table)
                if stats is None:
                    continue
                live, dead, size, _ = stats
                if live < EXACT_COUNT_BELOW:  # the statistics lag behind a cleanup; a count this size is quick
                    live = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
                if rules.dead_tuples:
                    share = dead / live if live else (1.0 if dead else 0.0)
                    found.append(AlertResult("dead_tuples", name, share > rules.dead_tuples.max_fraction,
                                             rules.dead_tuples.severity,
                                             f"{dead:,} dead tuples, {share:.0%} of live (alert above "
                                             f"{rules.dead_tuples.max_fraction:.0%})"))
                if rules.table_bytes:
                    found.append(AlertResult("table_bytes", name, size > rules.table_bytes.max, rules.table_bytes.severity,
                                             f"{human_bytes(size)} (alert above {human_bytes(rules.table_bytes.max)})"))
        if rules.blocked_sessions:
            blocked = [s for s in dialect.sessions(conn, 0) if s["blocked_by"]]
            found.append(AlertResult("blocked_sessions", "server", len(blocked) > rules.blocked_sessions.max,
                                     rules.blocked_sessions.severity,
                                     f"{len(blocked)} blocked sessions (alert above {rules.blocked_sessions.max})"))
    if rules.run_failed:
        found += _runs(policy, target, rules.run_failed.severity)
    return found


def _runs(policy: Policy, target: Target, severity: str) -> list[AlertResult]:
    ledger = Ledger(target.engine)
    ledger.ensure()
    latest = {}
    for run in ledger.list_runs(policy.name, limit=None):  # newest first
        latest.setdefault(run.phase, run)
    found = []
    for phase in policy.phases:
        run = latest.get(phase.name)
        bad = run is not None and run.state in (FAILED, STOPPED, REFUSED)
        text = "no run yet" if run is None else f"last run {run.run_id} {run.state}" + (
            f": {run.stop_reason}" if run.stop_reason and run.stop_reason != run.state else "")
        found.append(AlertResult("run_failed", phase.name, bad, severity, text))
    return found
