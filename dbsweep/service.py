"""What the CLI and the Dagster resources call: plan, authorize, apply, verify. The gate itself
(Great Expectations) is passed in as a verdict, so this module stays free of it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from .catalog import reflect_table
from .dialects import dialect_for
from .durations import parse_duration
from .errors import BadInput, GateRefused, WaitedTooLong, timed_out
from .executor import Executor, Progress, RunOptions, RunReport
from .kinds import DryRunLine, kind_named
from .ledger import Ledger
from .plan import GateVerdict, PhasePlan, utcnow
from .policy import Policy
from .target import Target


@dataclass
class DryRunReport:
    plan_id: str
    phase: str
    rows: int
    batches_estimate: int
    steps: list[DryRunLine]
    resumes_run: str | None
    checks: list[dict] = field(default_factory=list)  # preconditions and their results (retire)


def make_plan(policy: Policy, phase_name: str, target: Target, now: datetime | None = None,
              window: tuple[datetime, datetime] | None = None) -> PhasePlan:
    """Discovery: validate the phase against the live catalog, profile it, freeze the selection.
    `window` (retention): only rows whose time falls in [start, end), one backfill window."""
    cfg = policy.phase(phase_name)
    kind = kind_named(cfg.kind)
    now = now or utcnow()
    dialect = dialect_for(target.engine)
    if window is not None and not kind.windowed:
        raise BadInput(f"phase '{cfg.name}': a {cfg.kind} phase cannot be cut into time windows")
    if why_not := kind.cannot_run_on(dialect.name):
        raise BadInput(f"{policy.path}: phase '{cfg.name}': {why_not}")
    with target.engine.connect() as conn:
        try:  # discovery waits no longer than a batch would: an idle lock holder cannot hang it
            dialect.set_session_timeouts(conn, cfg.seconds("lock_timeout"), cfg.seconds("statement_timeout"), local=True)
            parts = kind.build_plan(cfg, conn, dialect, now, window)
            if cfg.archive != "none":
                _refuse_what_cannot_be_restored(conn, dialect, parts.steps, cfg.archive)
        except BadInput as exc:
            raise BadInput(f"{policy.path}: phase '{cfg.name}': {exc}") from None
        except sa.exc.DBAPIError as exc:
            if not timed_out(exc):
                raise
            raise WaitedTooLong(f"{policy.path}: phase '{cfg.name}': planning waited longer than lock_timeout "
                                f"({cfg.lock_timeout}) or statement_timeout ({cfg.statement_timeout}): "
                                f"{str(exc.orig).strip().splitlines()[0]}; nothing was planned, run again") from None
    plan = PhasePlan(
        policy=policy.name, phase=cfg.name, kind=cfg.kind, env=target.env, created_at=now,
        phase_fingerprint=policy.fingerprints[cfg.name], cutoff=parts.cutoff, steps=parts.steps,
        profile=parts.profile, histogram=parts.histogram, expect=parts.expect, checks=parts.checks,
    )
    ledger = Ledger(target.engine)
    ledger.ensure()
    ledger.save_plan(plan)
    return plan


def _refuse_what_cannot_be_restored(conn, dialect, steps, archive: str) -> None:
    for table in dict.fromkeys(step.table for step in steps):
        why = dialect.cannot_restore_into(conn, reflect_table(conn, table))
        if why:
            raise BadInput(f"archive = '{archive}': {why}; nothing was changed")


def record_gate(target: Target, plan: PhasePlan, verdict: GateVerdict) -> PhasePlan:
    Ledger(target.engine).record_gate(plan.plan_id, verdict)
    plan.gate = verdict
    return plan


def load_plan(target: Target, plan_id: str) -> PhasePlan:
    plan = Ledger(target.engine).load_plan(plan_id)
    if plan is None:
        raise BadInput(f"plan {plan_id} is not in this database's ledger")
    return plan


def resumable_plan(policy: Policy, phase_name: str, target: Target) -> PhasePlan | None:
    """The plan of an unfinished run of this phase, if any: resuming never makes a new plan."""
    ledger = Ledger(target.engine)
    ledger.ensure()
    run = ledger.unfinished_run(policy.name, phase_name, target.env)
    return None if run is None else ledger.load_plan(run.plan_id)


def no_undo(policy: Policy, plan: PhasePlan) -> str | None:
    """Why this plan's change could not be undone by `dbsweep restore` (None: it can)."""
    return kind_named(plan.kind).no_undo(policy.phase(plan.phase), plan)


def authorize(policy: Policy, target: Target, plan: PhasePlan, *, dry_run: bool,
              confirm: str | None, accept_no_undo: bool = False) -> tuple[PhasePlan, str | None]:
    """Refuse, before anything changes, a plan that is not the one the gate judged (the ledger's copy
    is the reference: a plan file that differs from it in any field is refused), not this policy's,
    changed, stale, or whose gate did not pass. Returns the ledger's plan, the one that runs, and
    the id of its unfinished run if there is one."""
    ledger = Ledger(target.engine)
    ledger.ensure()
    recorded = ledger.approved_plan(plan.plan_id)
    changed = plan.differences(recorded)
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        raise GateRefused(f"plan {plan.plan_id}: the plan given differs from the one its gate judged in: {shown}; "
                          "nothing was run (the ledger's copy is the plan; make a new plan to change it)")
    cfg = policy.phase(recorded.phase)
    if recorded.policy != policy.name or recorded.env != target.env:
        raise BadInput(f"plan {recorded.plan_id} is for {recorded.policy}/{recorded.env}, not {policy.name}/{target.env}")
    run = ledger.unfinished_run(recorded.policy, recorded.phase, recorded.env, recorded.plan_id)
    done = ledger.finished_run(recorded.plan_id)
    if done is not None and not dry_run:
        raise BadInput(f"plan {recorded.plan_id} already ran to the end (run {done.run_id}, {done.rows_done:,} rows); "
                       "nothing is left of it to do: make a new plan to run the phase again")
    if recorded.phase_fingerprint != policy.fingerprints[recorded.phase]:
        way_out = (f"; its unfinished run {run.run_id} resumes only under the policy it was planned with, or give it up "
                   f"with `dbsweep abandon {run.run_id}` (what it did stays undoable)") if run else "; make a new plan"
        raise BadInput(f"{policy.path}: phase '{recorded.phase}' changed since plan {recorded.plan_id} was made{way_out}")
    if target.protected and not dry_run and confirm != recorded.phase:
        raise BadInput(f"env '{target.env}' is protected: a real run of phase '{recorded.phase}' needs --confirm {recorded.phase}")
    if target.protected and not dry_run and not accept_no_undo and (why := no_undo(policy, recorded)):
        raise BadInput(f"env '{target.env}' is protected and phase '{recorded.phase}' cannot be undone ({why}): "
                       "a real run needs --accept-no-undo as well; nothing was run")
    if not recorded.gate.passed:
        raise GateRefused(f"plan {recorded.plan_id}: gate failed: {recorded.gate.summary}")
    max_age = parse_duration(cfg.max_plan_age)
    if run is None and utcnow() - recorded.created_at > max_age:
        raise GateRefused(f"plan {recorded.plan_id} is older than max_plan_age ({cfg.max_plan_age}); make a new plan")
    return recorded, None if run is None else run.run_id


def run_options(policy: Policy, phase_name: str, **overrides) -> RunOptions:
    cfg = policy.phase(phase_name)
    options = RunOptions(
        batch_size=None, target_batch_ms=cfg.batch_target_ms, max_rows=cfg.max_rows,
        max_runtime_s=cfg.seconds("max_runtime"), sleep_ms=cfg.sleep_ms,
        lock_timeout_s=cfg.seconds("lock_timeout"), statement_timeout_s=cfg.seconds("statement_timeout"),
        after=list(cfg.after), archive=cfg.archive, archive_dir=policy.archive_dir,
        max_replica_lag_s=cfg.seconds("max_replica_lag"), max_waiting_sessions=cfg.max_waiting_sessions,
        max_active_sessions=cfg.max_active_sessions, throttle_query=cfg.throttle_query, throttle_max=cfg.throttle_max,
        max_duty=cfg.max_duty,
    )
    for key, value in overrides.items():
        if value is not None:
            setattr(options, key, value)
    if overrides.get("batch_size") is not None and overrides.get("target_batch_ms") is None:
        options.target_batch_ms = None  # an explicit batch size on the command line is a fixed size
    return options


def apply(policy: Policy, target: Target, plan: PhasePlan, *, dry_run: bool = True, confirm: str | None = None,
          accept_no_undo: bool = False, on_progress=None, observers=(), **overrides) -> RunReport | DryRunReport:
    try:
        plan, resumes = authorize(policy, target, plan, dry_run=dry_run, confirm=confirm, accept_no_undo=accept_no_undo)
    except GateRefused as exc:
        if not dry_run:
            Ledger(target.engine).record_refusal(plan, f"gate: {exc}")
        raise
    options = run_options(policy, plan.phase, **overrides)
    if dry_run:
        lines = kind_named(plan.kind).dry_run(plan, options.batch_size)
        return DryRunReport(plan.plan_id, plan.phase, plan.rows_selected, sum(line.transactions for line in lines),
                            lines, resumes, plan.checks)
    gateway = os.environ.get("DBSWEEP_PUSHGATEWAY")
    if gateway:
        from .metrics import PushgatewayObserver

        observers = [*observers, PushgatewayObserver(gateway, plan.policy, plan.phase)]
    return Executor(target.engine, plan, options, on_progress, observers).run()


def verify(target: Target, plan: PhasePlan) -> list[dict]:
    with target.engine.connect() as conn:
        return kind_named(plan.kind).verify(conn, dialect_for(conn), plan)


__all__ = ["DryRunReport", "Progress", "RunReport", "apply", "authorize", "load_plan", "make_plan", "record_gate",
           "resumable_plan", "verify"]
