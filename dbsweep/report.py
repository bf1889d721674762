"""Rich tables for the CLI: plans, runs, verification, status."""

from __future__ import annotations

from datetime import datetime, timezone

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .plan import GateVerdict, PhasePlan


def human_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def plural(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def when(value, zone: bool = True) -> str:
    """A moment, one way everywhere: `2026-11-23 14:05:09 UTC` (an ISO string or a datetime; one
    without a zone is UTC, as the ledger keeps them). `zone=False` in a table whose header says UTC."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        return f"{value:%Y-%m-%d %H:%M:%S}" + (" UTC" if zone else "")
    return str(value)


def print_plan(out: Console, target, plans: list[PhasePlan]) -> None:
    table = Table(title=f"plan on {escape(target.display_url)} (env {target.env}; times in UTC)")
    for name in ("phase", "plan id", "table", "rows", "selected", "fraction", "oldest selected",
                 "newest selected", "cutoff / action", "est. bytes removed", "gate"):
        moment = name in ("oldest selected", "newest selected", "cutoff / action")
        table.add_column(name, justify="right" if name in ("rows", "selected", "fraction", "est. bytes removed") else "left",
                         overflow="fold", min_width=len(when(datetime(2000, 1, 1), zone=False)) if moment else None)
    for plan in plans:
        verdict = "[green]passed[/]" if plan.gate and plan.gate.passed else f"[red]refused[/]: {plan.gate.summary if plan.gate else 'not run'}"
        for row in plan.profile:
            total, selected = row.get("rows_total"), row.get("rows_selected") or 0
            fraction = row.get("fraction_selected", selected / total if total else 0.0)
            label = row["table"] + (f" ({row['rule']})" if "rule" in row else "")
            what = row.get("detail") or row.get("sets") or when(plan.cutoff, zone=False)
            table.add_row(plan.phase, plan.plan_id, label, "-" if total is None else f"{total:,}", f"{selected:,}",
                          f"{fraction:.1%}", when(row.get("oldest_selected") or row.get("oldest_activity"), zone=False),
                          when(row.get("newest_selected") or row.get("newest_activity"), zone=False), what,
                          human_bytes(row.get("est_bytes")), verdict)
    out.print(table)
    for plan in plans:
        if plan.histogram:
            ages = " · ".join(f"{age} {count:,}" for age, count in plan.histogram.items())
            out.print(f"{plan.phase}: rows by age: {ages}", soft_wrap=True)
        for row in plan.profile:
            if row.get("whole_partitions"):
                out.print(f"{plan.phase}: partitions going whole: {', '.join(row['whole_partitions'])}")
            if row.get("window"):
                out.print(f"{plan.phase}: only the window {row['window']} of {row['table']}")
            if row.get("strategy") and row.get("why") and not row.get("detail"):
                out.print(f"{plan.phase}: {escape(row['table'])}: {row['strategy']}: {escape(row['why'])}", soft_wrap=True)
            if row.get("backups", "none") != "none":
                out.print(f"{plan.phase}: {escape(row['table'])}: rebuild backups: {escape(row['backups'])}", soft_wrap=True)
        for writes in dict.fromkeys(row["writes"] for row in plan.profile if row.get("writes")):
            out.print(f"{plan.phase}: saves what it changes in {writes}", soft_wrap=True)
        _print_checks(out, plan.phase, plan.checks)


def _print_checks(out: Console, phase: str, checks: list[dict]) -> None:
    for check in checks:
        found = escape(check["found"])
        mark = ("[green]ok[/]" if check["found"] == "none" else
                f"[yellow]{found}[/]" if check["found"].startswith("not checked") else f"[red]blocked[/]: {found}")
        out.print(f"{phase}: {check['table']}: {check['check']}: {mark}", soft_wrap=True)


def print_dry_run(out: Console, report) -> None:
    note = f", resumes run {report.resumes_run}" if report.resumes_run else ""
    out.print(f"[bold]{report.phase}[/] (dry run, plan {report.plan_id}{note}): would change {report.rows:,} rows "
              f"in about {plural(report.batches_estimate, 'batch', 'batches')}; nothing changed")
    for line in report.steps:
        if line.action:
            out.print(f"  {line.table}: {line.rows:,} rows, {line.action}")
        else:
            out.print(f"  {line.table}: {line.rows:,} rows, walk by {line.walk}, batch size {line.batch_size:,}")
    _print_checks(out, report.phase, report.checks)


def print_waiting(out: Console, plan: PhasePlan) -> None:
    """Tables with nothing to do yet, and when they will have (a retire inside its grace)."""
    for row in plan.profile:
        if row.get("due"):
            out.print(f"{plan.phase}: {row['table']}: {row['detail']}", soft_wrap=True)


def print_run(out: Console, report) -> None:
    colour = "green" if report.state == "finished" else "yellow"
    resumed = " (resumed)" if report.resumed else ""
    why = "" if report.stop_reason == report.state else f" ({report.stop_reason})"
    out.print(f"[bold]{report.phase}[/]: run {report.run_id}{resumed} [{colour}]{report.state}[/]{why}: "
              f"{plural(report.rows, 'row', 'rows')} in {plural(report.batches, 'batch', 'batches')}, "
              f"{report.rows_per_s:,.0f} rows/s this session, "
              f"batch p50 {report.batch_ms['p50']:.0f} ms, p95 {report.batch_ms['p95']:.0f} ms, max {report.batch_ms['max']:.0f} ms")
    if report.throttled_s:
        out.print(f"  paused {report.throttled_s:,.1f} s in all for load (active or waiting sessions, throttle query, max_duty)")
    if report.replica_pauses:
        out.print(f"  paused {report.replica_pauses:,} times for replica lag, {report.replica_paused_s:,.1f} s in all")


def print_verification(out: Console, plan: PhasePlan, rows: list[dict], verdict: GateVerdict) -> None:
    colour = "green" if verdict.passed else "red"
    out.print(f"[bold]{plan.phase}[/] (plan {plan.plan_id}): [{colour}]{verdict.summary}[/]")
    for row in rows:
        details = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in row.items() if k != "table")
        out.print(f"  {row['table']}: {details}")


def print_status(out: Console, policy, target, runs, undoable: set[str]) -> None:
    table = Table(title=f"{policy.name} runs on {escape(target.display_url)} (env {target.env}; times in UTC)")
    for name in ("run id", "phase", "plan id", "state", "rows", "batches", "started", "updated",
                 "why it stopped", "next"):
        table.add_column(name, justify="right" if name in ("rows", "batches") else "left", no_wrap=name == "next")
    for run in runs:
        resumable = "yes: dbsweep run" if run.state in ("running", "stopped", "failed") else ""
        if run.run_id in undoable:
            resumable += ("; " if resumable else "") + f"undo: dbsweep restore {run.run_id}"
        table.add_row(run.run_id, run.phase, run.plan_id, run.state, f"{run.rows_done:,}", f"{run.batches_done:,}",
                      when(run.started_at, zone=False), when(run.updated_at, zone=False),
                      Text("" if run.stop_reason in (None, run.state) else run.stop_reason), resumable)
    out.print(table)


def print_health(out: Console, policy, target, findings) -> None:
    table = Table(title=f"{policy.name} health on {escape(target.display_url)} (env {target.env})")
    for name in ("check", "subject", "finding", "status"):
        table.add_column(name)
    colour = {"ok": "green", "warn": "yellow", "problem": "red"}
    for f in findings:
        table.add_row(Text(f.check), Text(f.subject), Text(f.value), f"[{colour[f.status]}]{f.status}[/]")
    out.print(table)


def print_stats(out: Console, policy, target, stats) -> None:
    table = Table(title=f"{policy.name} statistics on {escape(target.display_url)} (env {target.env}; times in UTC)")
    for name in ("phase", "runs", "succeeded", "success rate", "refused", "rows changed", "last success",
                 "median duration", "median rows/s, start to finish"):
        table.add_column(name, justify="left" if name in ("phase", "last success") else "right")
    for s in stats:
        table.add_row(s.phase, f"{s.runs:,}", f"{s.succeeded:,}", "-" if s.success_rate is None else f"{s.success_rate:.0%}",
                      f"{s.refused:,}", f"{s.rows_changed:,}", when(s.last_success, zone=False),
                      "-" if s.median_seconds is None else f"{s.median_seconds:.1f} s",
                      "-" if s.median_rows_per_s is None else f"{s.median_rows_per_s:,.0f}")
    out.print(table)


def print_alerts(out: Console, policy, results) -> None:
    if not results:
        out.print(f"{policy.name}: no \\[alerts] configured")
        return
    table = Table(title=f"{policy.name} alerts")
    for name in ("alert", "subject", "finding", "status"):
        table.add_column(name)
    for r in results:
        status = f"[{'red' if r.severity == 'error' else 'yellow'}]{r.severity}: fired[/]" if r.fired else "[green]ok[/]"
        table.add_row(Text(r.alert), Text(r.subject), Text(r.text), status)
    out.print(table)


def print_discovery(out: Console, source: str, found) -> None:
    """What discover proposes, kind by kind: the table, why, and how sure."""
    since = f"statistics since {when(found.stats_reset)}" if found.stats_reset else "the statistics' start is not recorded"
    out.print(f"discovery of {escape(source)}: {found.tables} tables in {found.seconds:.1f} s, read-only; {since}",
              soft_wrap=True)
    kinds = dict.fromkeys(p.kind for p in found.proposals)
    for kind in kinds:
        table = Table(title=f"{kind}: " + ("evidence only" if kind == "health" else "proposed phases"))
        for name in ("table", "why", "how sure", "phase"):
            table.add_column(name, overflow="fold")
        for p in (p for p in found.proposals if p.kind == kind):
            table.add_row(escape(p.table), escape(p.why), p.sure, "draft" if p.phase else "-")
        out.print(table)
    if not any(p.phase for p in found.proposals):
        out.print("nothing to propose: no table has old rows, duplicates, duplicate roots or unused copies")
