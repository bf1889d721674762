"""One asset graph per phase: profile -> (blocking GE gate) -> apply -> verified.

The gate's verdict is recorded in the target database's ledger with the frozen plan, and the
engine refuses to apply a plan whose gate did not pass: launching `apply` alone, outside the
run that made the plan, cannot skip the gate."""


import time
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from dbsweep import service
from dbsweep.durations import parse_duration
from dbsweep.errors import DbsweepError
from dbsweep.executor import Progress
from dbsweep.report import human_bytes
from resources import DbsweepResource

PROGRESS_EVERY_BATCHES = 1000
PROGRESS_EVERY_SECONDS = 10.0


class ApplyConfig(dg.Config):
    dry_run: bool = Field(default=True, description="Default: check everything, change nothing.")
    confirm: str = Field(default="", description="The phase name; required for a real run in a protected env.")
    max_rows: Optional[int] = Field(default=None, description="Stop (resumable) after this many rows.")
    batch_size: Optional[int] = Field(default=None, description="Override the phase's batch_size.")


@dataclass
class PhaseAssets:
    assets: list[dg.AssetsDefinition]
    checks: list[dg.AssetChecksDefinition]
    job: Any
    schedule: Optional[dg.ScheduleDefinition]


def _plan_id(profile: pd.DataFrame) -> str:
    return str(profile["plan_id"].iloc[0])


def _fail(exc: DbsweepError) -> dg.Failure:
    return dg.Failure(description=str(exc), metadata={"exit_code": exc.exit_code, "refused": str(exc)})


def _progress_logger(context: dg.AssetExecutionContext, every: int | str | None):
    """A log line every `every` batches (int), every `every` (a duration), or by default every
    PROGRESS_EVERY_BATCHES batches or PROGRESS_EVERY_SECONDS, whichever comes first."""
    last = {"at": time.monotonic(), "batches": 0}
    batches = every if isinstance(every, int) else (None if every else PROGRESS_EVERY_BATCHES)
    seconds = parse_duration(every).total_seconds() if isinstance(every, str) else (None if every else PROGRESS_EVERY_SECONDS)

    def log(progress: Progress) -> None:
        now = time.monotonic()
        if ((batches is not None and progress.batches - last["batches"] >= batches)
                or (seconds is not None and now - last["at"] >= seconds)):
            context.log.info(f"{progress.table}: {progress.rows_done:,}/{progress.rows_planned:,} rows, "
                             f"{progress.rows_per_s:,.0f} rows/s, batch {progress.batch_ms:.0f} ms")
            last.update(at=now, batches=progress.batches)

    return log


WINDOWS = {"day": dg.DailyPartitionsDefinition, "week": dg.WeeklyPartitionsDefinition,
           "month": dg.MonthlyPartitionsDefinition}


def build_phase(policy_name: str, phase) -> PhaseAssets:
    """The phase's graph: profile (gate) -> apply -> verified, its job and its schedule."""
    return _graph(policy_name, phase, [policy_name, phase.name], None)


def build_backfill(policy_name: str, phase) -> PhaseAssets | None:
    """A retention phase with `backfill`: the same graph under `<policy>/<phase>/backfill/`,
    partitioned by time windows of its time column, so a long history is purged window by window
    (a Dagster backfill), each window with its own plan, gate, run and verification."""
    backfill = getattr(phase, "backfill", None)
    if backfill is None:
        return None
    windows = WINDOWS[backfill.window](start_date=backfill.start.isoformat())
    return _graph(policy_name, phase, [policy_name, phase.name, "backfill"], windows)


def _graph(policy_name: str, phase, prefix: list[str], windows) -> PhaseAssets:
    profile_key, apply_key, verified_key = (dg.AssetKey([*prefix, leaf]) for leaf in ("profile", "apply", "verified"))
    group = f"{policy_name}_{phase.name}".replace("-", "_")
    pool = f"dbsweep_{policy_name}"
    tags = {"dbsweep/kind": phase.kind}
    name = "__".join(prefix).replace("-", "_")

    @dg.asset(key=profile_key, group_name=group, tags=tags, pool=pool, partitions_def=windows,
              description=f"Discovery for {'/'.join(prefix)} ({phase.kind}): volumes, ages, bytes; freezes the plan.")
    def profile(context: dg.AssetExecutionContext, dbsweep: DbsweepResource) -> dg.Output[pd.DataFrame]:
        policy = dbsweep.policy(policy_name)
        target = dbsweep.target(policy)
        window = None
        if context.has_partition_key:  # one backfill window of the time column
            window = (context.partition_time_window.start, context.partition_time_window.end)
        try:
            plan = service.make_plan(policy, phase.name, target, window=window)
        except DbsweepError as exc:
            raise _fail(exc) from None
        frame = pd.DataFrame(plan.profile).assign(plan_id=plan.plan_id)
        first = plan.profile[0] if plan.profile else {}
        rows_total = sum(r.get("rows_total") or 0 for r in plan.profile)
        metadata = {
            "plan_id": plan.plan_id,
            "env": target.env,
            "target": target.display_url,
            "cutoff": str(plan.cutoff) if plan.cutoff else "-",
            "rows_total": rows_total,
            "rows_selected": plan.rows_selected,
            "fraction": float(first.get("fraction_selected", 0.0)) if len(plan.profile) == 1 else
            plan.rows_selected / max(1, rows_total),
            "oldest_selected": str(first.get("oldest_selected") or "-"),
            "newest_selected": str(first.get("newest_selected") or "-"),
            "estimated_bytes": human_bytes(sum(r.get("est_bytes") or 0 for r in plan.profile)),
            "age_histogram": dg.MetadataValue.json(plan.histogram),
            "profile": dg.MetadataValue.md(frame.astype(str).to_markdown(index=False)),
        }
        if window is not None:
            metadata["window"] = f"{window[0].isoformat()} to {window[1].isoformat()}"
        if plan.checks:
            metadata["preconditions"] = dg.MetadataValue.md(pd.DataFrame(plan.checks).to_markdown(index=False))
        return dg.Output(frame, metadata=metadata)

    with warnings.catch_warnings():
        # a partitioned asset check is a Dagster preview; the engine enforces the gate regardless
        warnings.simplefilter("ignore", dg.PreviewWarning)
        gate = _gate_check(policy_name, profile_key, windows)

    @dg.asset(key=apply_key, group_name=group, tags=tags, pool=pool, ins={"profile": dg.AssetIn(profile_key)},
              partitions_def=windows,
              description=f"Batched {phase.kind} of {'/'.join(prefix)}; dry run unless dry_run=false.")
    def apply(context: dg.AssetExecutionContext, config: ApplyConfig, profile: pd.DataFrame,
              dbsweep: DbsweepResource) -> dg.Output[dict]:
        policy = dbsweep.policy(policy_name)
        target = dbsweep.target(policy)
        try:
            plan = service.load_plan(target, _plan_id(profile))
            report = service.apply(policy, target, plan, dry_run=config.dry_run, confirm=config.confirm or None,
                                   on_progress=_progress_logger(context, phase.progress_every), max_rows=config.max_rows,
                                   batch_size=config.batch_size)
        except DbsweepError as exc:
            raise _fail(exc) from None
        if config.dry_run:
            return dg.Output({"plan_id": plan.plan_id, "dry_run": True}, metadata={
                "dry_run": True, "plan_id": plan.plan_id, "rows": report.rows,
                "batches_estimate": report.batches_estimate, "resumes_run": report.resumes_run or "-",
            })
        metadata = {
            "dry_run": False, "plan_id": plan.plan_id, "run_id": report.run_id, "state": report.state,
            "stop_reason": report.stop_reason, "rows": report.rows, "rows_per_s": round(report.rows_per_s, 1),
            "batches": report.batches, "batch_p50_ms": round(report.batch_ms["p50"], 1),
            "batch_p95_ms": round(report.batch_ms["p95"], 1), "batch_max_ms": round(report.batch_ms["max"], 1),
            "resumed": report.resumed, "archive": phase.archive,
            "replica_pauses": report.replica_pauses, "replica_paused_s": round(report.replica_paused_s, 1),
        }
        if report.state != "finished":
            raise dg.Failure(description=f"stopped early ({report.stop_reason}); relaunch to resume run {report.run_id}",
                             metadata=metadata)
        return dg.Output({"plan_id": plan.plan_id, "dry_run": False, "run_id": report.run_id}, metadata=metadata)

    @dg.asset(key=verified_key, group_name=group, tags=tags, ins={"applied": dg.AssetIn(apply_key)},
              check_specs=[dg.AssetCheckSpec("postconditions", asset=verified_key)], partitions_def=windows,
              description=f"Post-conditions of {'/'.join(prefix)}, as Great Expectations results.")
    def verified(context: dg.AssetExecutionContext, applied: dict, dbsweep: DbsweepResource):
        from expectations.dagster_checks import check_result
        from expectations.runner import verification

        policy = dbsweep.policy(policy_name)
        target = dbsweep.target(policy)
        plan = service.load_plan(target, applied["plan_id"])
        rows = service.verify(target, plan)
        verdict = verification(plan, rows)
        severity = dg.AssetCheckSeverity.WARN if applied["dry_run"] else dg.AssetCheckSeverity.ERROR
        if applied["dry_run"]:
            verdict.summary = f"dry run, nothing applied: {verdict.summary}"
        frame = pd.DataFrame(rows)
        yield dg.MaterializeResult(metadata={
            "plan_id": plan.plan_id, "dry_run": applied["dry_run"], "passed": verdict.passed,
            "postconditions": dg.MetadataValue.md(frame.astype(str).to_markdown(index=False)),
        })
        yield check_result(verdict, plan.plan_id, check_name="postconditions", severity=severity)

    job = dg.define_asset_job(
        name=name, selection=dg.AssetSelection.assets(profile_key, apply_key, verified_key),
        description=f"{'/'.join(prefix)}: profile, gate, apply, verify. Dry run unless configured.",
        tags={"dbsweep/policy": policy_name, "dbsweep/phase": phase.name},
    )
    schedule = None
    if phase.schedule and windows is None:
        schedule = dg.ScheduleDefinition(
            name=f"{job.name}__schedule", job=job, cron_schedule=phase.schedule,
            # the policy's schedule is its author's confirmation; it starts STOPPED until switched on
            run_config={"ops": {_op_name(apply_key): {"config": {"dry_run": False, "confirm": phase.name}}}},
            default_status=dg.DefaultScheduleStatus.STOPPED,
        )
    return PhaseAssets(assets=[profile, apply, verified], checks=[gate], job=job, schedule=schedule)


def _op_name(key: dg.AssetKey) -> str:
    return "__".join(key.path).replace("-", "_")


def _gate_check(policy_name: str, profile_key: dg.AssetKey, windows) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=profile_key, name="gate", blocking=True, partitions_def=windows,
                    description="Great Expectations gate on the profile; a failure stops apply in this run, "
                                "and the ledger keeps apply from ever using this plan.")
    def gate(context: dg.AssetCheckExecutionContext, profile: pd.DataFrame, dbsweep: DbsweepResource) -> dg.AssetCheckResult:
        from expectations.dagster_checks import check_result
        from expectations.runner import gate as run_gate

        policy = dbsweep.policy(policy_name)
        target = dbsweep.target(policy)
        plan = service.load_plan(target, _plan_id(profile))
        verdict = run_gate(plan)
        service.record_gate(target, plan, verdict)
        return check_result(verdict, plan.plan_id)

    return gate
