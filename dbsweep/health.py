"""`dbsweep health`: is the target fit for a cleanup, and is one due? Connectivity, connection
use, the policy's tables (rows, size, dead tuples, largest indexes), the oldest row against each
retention rule, long-running, idle-in-transaction and blocked sessions.

Every finding is ok, warn (worth a look; a cleanup may be due) or problem (fix before running a
cleanup: a blocked session, connections nearly exhausted)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from .catalog import reflect_table
from .dialects import dialect_for
from .errors import DbsweepError
from .findings import OK, PROBLEM, WARN, Finding
from .findings import age as _age
from .kinds import kind_named
from .plan import as_utc
from .policy import Policy
from .redact import redact
from .report import human_bytes
from .target import Target

DEAD_SHARE_WARN = 0.2  # dead tuples over a fifth of the live ones: autovacuum is behind
CONNECTIONS_PROBLEM = 0.9
EXACT_COUNT_BELOW = 5_000_000


def policy_tables(policy: Policy) -> dict[str, list[str]]:
    """Tables the policy's phases touch, each with the phases that name it."""
    found: dict[str, list[str]] = {}
    for phase in policy.phases:
        for name in kind_named(phase.kind).tables(phase):
            found.setdefault(name, []).append(phase.name)
    return found


def health_report(policy: Policy, target: Target, long_running: timedelta = timedelta(minutes=5)) -> list[Finding]:
    began = time.perf_counter()
    try:
        with target.engine.connect() as conn:
            version = dialect_for(conn).server_version(conn)
    except sa.exc.DBAPIError as exc:
        raise DbsweepError(f"health: cannot connect to {target.display_url}: {redact(str(exc.orig).splitlines()[0])}") from None
    findings = [Finding("connectivity", target.display_url, f"{(time.perf_counter() - began) * 1000:.0f} ms; {version}")]
    with target.engine.connect() as conn:
        dialect = dialect_for(conn)
        findings += _connections(dialect, conn)
        tables = {}
        for name, phases in policy_tables(policy).items():
            try:
                tables[name] = reflect_table(conn, name)
            except DbsweepError:
                findings.append(Finding("table", name, f"not found (phases {', '.join(phases)}); retired already?", WARN))
        for name, table in tables.items():
            findings += _table(dialect, conn, name, table)
        findings += _kinds(conn, dialect, policy, tables)
        findings += _sessions(dialect, conn, long_running)
        findings += _indexes(dialect, conn, list(tables.values()))
    return findings


def _connections(dialect, conn) -> list[Finding]:
    usage = dialect.connection_usage(conn)
    if usage is None:
        return []
    used, limit = usage
    status = PROBLEM if used >= CONNECTIONS_PROBLEM * limit else OK
    return [Finding("connections", "server", f"{used} of max_connections {limit}", status)]


def _table(dialect, conn, name: str, table: sa.Table) -> list[Finding]:
    stats = dialect.table_stats(conn, table)
    if stats is None:  # no statistics views: count the rows
        rows = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
        return [Finding("table", name, f"{rows:,} rows")]
    live, dead, size, vacuumed = stats
    if live < EXACT_COUNT_BELOW:  # statistics lag behind; a count this size takes well under a second
        live = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
        findings = [Finding("table", name, f"{live:,} rows, {human_bytes(size)}")]
    else:
        findings = [Finding("table", name, f"about {live:,} rows (statistics), {human_bytes(size)}")]
    share = dead / live if live else (1.0 if dead else 0.0)
    findings.append(Finding("dead tuples", name, f"{dead:,} ({share:.0%} of live); last vacuum {_ago(vacuumed)}",
                            WARN if dead > 1000 and share > DEAD_SHARE_WARN else OK))
    return findings


def _kinds(conn, dialect, policy: Policy, tables: dict[str, sa.Table]) -> list[Finding]:
    """What each phase's kind has to say (retention: the oldest row its rule would delete now)."""
    now = datetime.now(timezone.utc)
    return [finding for phase in policy.phases
            for finding in kind_named(phase.kind).health(phase, conn, dialect, now, set(tables))]


def _sessions(dialect, conn, long_running: timedelta) -> list[Finding]:
    findings = []
    for session in dialect.sessions(conn, long_running.total_seconds()):
        if session["blocked_by"]:
            findings.append(Finding("blocked", f"pid {session['pid']}",
                                    f"waiting {_age(session['for'])} on pid(s) {session['blocked_by']}: "
                                    f"{session['query']}", PROBLEM))
        elif session["state"] == "idle in transaction":
            findings.append(Finding("idle in transaction", f"pid {session['pid']}",
                                    f"for {_age(session['for'])}: holds back vacuum of what a cleanup deletes", WARN))
        else:
            findings.append(Finding("long-running", f"pid {session['pid']}",
                                    f"for {_age(session['for'])}: {session['query']}", WARN))
    return findings


def _indexes(dialect, conn, tables: list[sa.Table]) -> list[Finding]:
    return [Finding("largest index", name, f"{human_bytes(size)} on {table}")
            for name, table, size in dialect.largest_indexes(conn, tables, 5)]


def _ago(moment) -> str:
    if moment is None:
        return "never"
    return f"{_age(datetime.now(timezone.utc) - as_utc(moment))} ago"
