"""What the CLI and the Dagster resources call: plan, authorize, apply, verify. The gate itself
(Great Expectations) is passed in as a verdict, so this module stays free of it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from .dialects import dialect_for
from .durations import parse_duration
from .errors import BadInput, GateRefused
from .executor import Executor, Progress, RunOptions, RunReport
from .kinds import kind_module
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
    steps: list[dict]
    resumes_run: str | None
    checks: list[dict] = field(default_factory=list)  # preconditions and their results (retire)


def make_plan(policy: Policy, phase_name: str, target: Target, now: datetime | None = None,
              window: tuple[datetime, datetime] | None = None) -> PhasePlan:
    """Discovery: validate the phase against the live catalog, profile it, freeze the selection.
    `window` (retention): only rows whose time falls in [start, end), one backfill window."""
    cfg = policy.phase(phase_name)
    kind = kind_module(cfg.kind)
    now = now or utcnow()
    dialect = dialect_for(target.engine)
    if window is not None and cfg.kind != "retention":
        raise BadInput(f"phase '{cfg.name}': only retention phases are purged window by window")
    with target.engine.connect() as conn:
        try:
            extra = {"window": window} if window is not None else {}
            parts = kind.build_plan(cfg, conn, dialect, now, **extra)
        except BadInput as exc:
            raise BadInput(f"{policy.path}: phase '{cfg.name}': {exc}") from None
    plan = PhasePlan(
        policy=policy.name, phase=cfg.name, kind=cfg.kind, env=target.env, created_at=now,
        phase_fingerprint=policy.fingerprints[cfg.name], cutoff=parts.cutoff, steps=parts.steps,
        profile=parts.profile, histogram=parts.histogram, expect=parts.expect, checks=parts.checks,
    )
    ledger = Ledger(target.engine)
    ledger.ensure()
    ledger.save_plan(plan)
    return plan


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


def authorize(policy: Policy, target: Target, plan: PhasePlan, *, dry_run: bool, confirm: str | None) -> str | None:
    """Refuse, before anything changes, a plan that is not this policy's, changed, stale, or whose
    gate did not pass according to the ledger (not to the plan file). Returns a resumable run id."""
    cfg = policy.phase(plan.phase)
    if plan.policy != policy.name or plan.env != target.env:
        raise BadInput(f"plan {plan.plan_id} is for {plan.policy}/{plan.env}, not {policy.name}/{target.env}")
    if plan.phase_fingerprint != policy.fingerprints[plan.phase]:
        raise BadInput(f"{policy.path}: phase '{plan.phase}' changed since plan {plan.plan_id} was made; make a new plan")
    if target.protected and not dry_run and confirm != plan.phase:
        raise BadInput(f"env '{target.env}' is protected: a real run of phase '{plan.phase}' needs --confirm {plan.phase}")
    ledger = Ledger(target.engine)
    ledger.ensure()
    recorded = ledger.load_plan(plan.plan_id)
    if recorded is None:
        raise GateRefused(f"plan {plan.plan_id} is not in this database's ledger; make the plan against this database")
    if recorded.gate is None:
        raise GateRefused(f"plan {plan.plan_id}: the gate has not run on it")
    if not recorded.gate.passed:
        raise GateRefused(f"plan {plan.plan_id}: gate failed: {recorded.gate.summary}")
    run = ledger.unfinished_run(plan.policy, plan.phase, plan.env, plan.plan_id)
    max_age = parse_duration(cfg.max_plan_age)
    if run is None and utcnow() - plan.created_at > max_age:
        raise GateRefused(f"plan {plan.plan_id} is older than max_plan_age ({cfg.max_plan_age}); make a new plan")
    return None if run is None else run.run_id


def run_options(policy: Policy, phase_name: str, **overrides) -> RunOptions:
    cfg = policy.phase(phase_name)
    options = RunOptions(
        batch_size=None, target_batch_ms=cfg.batch_target_ms, max_rows=cfg.max_rows,
        max_runtime_s=cfg.seconds("max_runtime"), sleep_ms=cfg.sleep_ms,
        lock_timeout_s=cfg.seconds("lock_timeout"), statement_timeout_s=cfg.seconds("statement_timeout"),
        after=list(cfg.after), archive=cfg.archive, archive_dir=policy.archive_dir,
        max_replica_lag_s=cfg.seconds("max_replica_lag"),
    )
    for key, value in overrides.items():
        if value is not None:
            setattr(options, key, value)
    if overrides.get("batch_size") is not None and overrides.get("target_batch_ms") is None:
        options.target_batch_ms = None  # an explicit batch size on the command line is a fixed size
    return options


def apply(policy: Policy, target: Target, plan: PhasePlan, *, dry_run: bool = True, confirm: str | None = None,
          on_progress=None, **overrides) -> RunReport | DryRunReport:
    try:
        resumes = authorize(policy, target, plan, dry_run=dry_run, confirm=confirm)
    except GateRefused as exc:
        if not dry_run:
            Ledger(target.engine).record_refusal(plan, f"gate: {exc}")
        raise
    options = run_options(policy, plan.phase, **overrides)
    if dry_run:
        size = options.batch_size
        steps = [row for s in plan.steps for row in _dry_steps(plan, s, size)]
        batches = _batches_estimate(steps)
        return DryRunReport(plan.plan_id, plan.phase, plan.rows_selected, batches, steps, resumes, plan.checks)
    return Executor(target.engine, plan, options, on_progress).run()


def _batches_estimate(steps: list[dict]) -> int:
    """Transactions to expect. A cascade takes one per parent batch, plus one more for every
    further `batch_size` of a child table than its share of the parent batches holds."""
    parents = [s for s in steps if s["walk"] == "cascade parent"]
    parent_batches = sum(math.ceil(s["rows"] / s["batch_size"]) for s in parents)
    total = parent_batches
    for s in steps:
        if s["walk"] in ("retire", "partition"):
            total += 1
        elif s["walk"] == "cascade child":
            total += max(0, math.ceil(s["rows"] / s["batch_size"]) - parent_batches)
        elif s["walk"] != "cascade parent":
            total += math.ceil(s["rows"] / s["batch_size"])
    return total


def _dry_steps(plan: PhasePlan, step, size: int | None) -> list[dict]:
    """What a dry run lists: one line per table, a cascade's children included."""
    if step.walk != "cascade":
        return [{"table": step.table, "rows": step.rows_selected, "walk": step.walk,
                 "batch_size": size or step.batch_size, "action": step.spec.get("action", "")}]
    return [{"table": row["table"], "rows": row["rows_selected"], "walk": f"cascade {row['role']}",
             "batch_size": row.get("batch_size") or size or step.batch_size, "action": ""} for row in plan.profile]


def verify(target: Target, plan: PhasePlan) -> list[dict]:
    kind = kind_module(plan.kind)
    with target.engine.connect() as conn:
        return kind.verify(conn, dialect_for(conn), plan)


__all__ = ["DryRunReport", "Progress", "RunReport", "apply", "authorize", "load_plan", "make_plan", "record_gate",
           "resumable_plan", "verify"]
