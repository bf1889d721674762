"""One asset graph per phase: profile -> (blocking GE gate) -> apply -> verified.

The gate's verdict is recorded in the target database's ledger with the frozen plan, and the
engine refuses to apply a plan whose gate did not pass: launching `apply` alone, outside the
run that made the plan, cannot skip the gate."""

import warnings
from dataclasses import dataclass
from typing import Any, Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from dbsweep import service
from dbsweep.errors import DbsweepError
from dbsweep.kinds import kind_named
from resources import DbsweepResource

from .fleet import combined, partition_of
from .metadata import apply_metadata, dry_run_metadata, failure, profile_metadata
from .naming import DRY_RUN_TAG, PhaseNames
from .progress_log import progress_logger
from .schedules import phase_schedule


class ApplyConfig(dg.Config):
    dry_run: bool = Field(default=True, description="Default: check everything, change nothing.")
    confirm: str = Field(default="", description="The phase name; required for a real run in a protected env.")
    accept_no_undo: bool = Field(default=False, description="Required as well, in a protected env, for a phase whose "
                                 "change `dbsweep restore` could not undo (nothing archived).")
    max_rows: Optional[int] = Field(default=None, description="Stop (resumable) after this many rows.")
    batch_size: Optional[int] = Field(default=None, description="Override the phase's batch_size.")


@dataclass
class PhaseAssets:
    assets: list[dg.AssetsDefinition]
    checks: list[dg.AssetChecksDefinition]
    job: Any
    schedule: Optional[dg.ScheduleDefinition]


WINDOWS = {"day": dg.DailyPartitionsDefinition, "week": dg.WeeklyPartitionsDefinition,
           "month": dg.MonthlyPartitionsDefinition}


def build_phase(policy_name: str, phase, targets: dg.PartitionsDefinition | None = None) -> PhaseAssets:
    """The phase's graph: profile (gate) -> apply -> verified, its job and its schedule; for a
    fleet, partitioned by target."""
    names = PhaseNames(policy_name, phase.name, phase.kind)
    graph = PhaseGraph(names, phase, None, targets)
    return PhaseAssets(graph.assets(), [graph.gate()], graph.job(),
                       phase_schedule(names, phase.schedule, graph.job(), targets))


def build_backfill(policy_name: str, phase, targets: dg.PartitionsDefinition | None = None) -> PhaseAssets | None:
    """A phase whose kind is windowed and which declares `backfill`: the same graph under
    `<policy>/<phase>/backfill/`, partitioned by time windows, so a long history is purged window by
    window (a Dagster backfill), each window with its own plan, gate, run and verification."""
    backfill = kind_named(phase.kind).backfill(phase)
    if backfill is None:
        return None
    graph = PhaseGraph(PhaseNames(policy_name, phase.name, phase.kind, "backfill"), phase,
                       WINDOWS[backfill.window](start_date=backfill.start.isoformat()), targets)
    return PhaseAssets(graph.assets(), [graph.gate()], graph.job(), None)


def _plan_id(profile: pd.DataFrame) -> str:
    return str(profile["plan_id"].iloc[0])


def _target_of(profile: pd.DataFrame) -> str | None:
    """The fleet target the profile was made on (None: the env's one database)."""
    name = str(profile["target"].iloc[0]) if "target" in profile else ""
    return name or None


class PhaseGraph:
    """Builds the three assets, the gate check and the job of one phase (or of its backfill)."""

    def __init__(self, names: PhaseNames, phase, windows, targets=None):
        self.names, self.phase, self.windows, self.targets = names, phase, windows, targets
        self.partitions = combined(targets, windows)
        # a fleet's targets are different databases: no shared pool (which would queue them all);
        # the run queue keeps one run per target (README: Dagster for a fleet)
        self.pool = None if targets is not None else names.pool
        self._job = None

    def assets(self) -> list[dg.AssetsDefinition]:
        return [self.profile(), self.apply(), self.verified()]

    def job(self):
        if self._job is None:
            names = self.names
            self._job = dg.define_asset_job(
                name=names.job, selection=dg.AssetSelection.assets(*(names.key(leaf) for leaf in ("profile", "apply", "verified"))),
                description=f"{names.path}: profile, gate, apply, verify. Dry run unless configured.",
                tags=names.job_tags,
            )
        return self._job

    def profile(self) -> dg.AssetsDefinition:
        names, phase, policy_name = self.names, self.phase, self.names.policy

        @dg.asset(key=names.key("profile"), group_name=names.group, tags=names.asset_tags, pool=self.pool,
                  partitions_def=self.partitions,
                  description=f"Discovery for {names.path} ({phase.kind}): volumes, ages, bytes; freezes the plan.")
        def profile(context: dg.AssetExecutionContext, dbsweep: DbsweepResource) -> dg.Output[pd.DataFrame]:
            policy = dbsweep.policy(policy_name)
            name, window = partition_of(context, self.targets, self.windows)  # a fleet's target, a backfill window
            try:
                target = dbsweep.target(policy, name)
                plan = service.make_plan(policy, phase.name, target, window=window)
            except DbsweepError as exc:
                raise failure(exc, refused=str(exc)) from None
            frame = pd.DataFrame(plan.profile).assign(plan_id=plan.plan_id, target=name or "")
            metadata = profile_metadata(plan, target, frame, window)
            metadata["undo"] = f"none: {why}" if (why := service.no_undo(policy, plan)) else "dbsweep restore"
            return dg.Output(frame, metadata=metadata)

        return profile

    def gate(self) -> dg.AssetChecksDefinition:
        policy_name = self.names.policy
        with warnings.catch_warnings():
            # a partitioned asset check is a Dagster preview; the engine enforces the gate regardless
            warnings.simplefilter("ignore", dg.PreviewWarning)

            @dg.asset_check(asset=self.names.key("profile"), name="gate", blocking=True, partitions_def=self.partitions,
                            description="Great Expectations gate on the profile; a failure stops apply in this run, "
                                        "and the ledger keeps apply from ever using this plan.")
            def gate(context: dg.AssetCheckExecutionContext, profile: pd.DataFrame,
                     dbsweep: DbsweepResource) -> dg.AssetCheckResult:
                from expectations.dagster_checks import check_result
                from expectations.runner import gate as run_gate

                policy = dbsweep.policy(policy_name)
                target = dbsweep.target(policy, _target_of(profile))
                plan = service.load_plan(target, _plan_id(profile))
                verdict = run_gate(plan)
                service.record_gate(target, plan, verdict)
                return check_result(verdict, plan.plan_id)

        return gate

    def apply(self) -> dg.AssetsDefinition:
        names, phase, policy_name = self.names, self.phase, self.names.policy
        key = names.key("apply")

        # output_required=False: a dry run changes nothing, so it records an observation, not a
        # materialization, and the verification after it is skipped instead of failing
        @dg.asset(key=key, group_name=names.group, tags=names.asset_tags, pool=self.pool,
                  ins={"profile": dg.AssetIn(names.key("profile"))}, partitions_def=self.partitions,
                  output_required=False,
                  description=f"Batched {phase.kind} of {names.path}; dry run unless dry_run=false (a dry run is "
                              "recorded as an observation tagged dbsweep/dry_run, never as a materialization).")
        def apply(context: dg.AssetExecutionContext, config: ApplyConfig, profile: pd.DataFrame,
                  dbsweep: DbsweepResource):
            policy = dbsweep.policy(policy_name)
            try:
                target = dbsweep.target(policy, _target_of(profile))
                plan = service.load_plan(target, _plan_id(profile))
                report = service.apply(policy, target, plan, dry_run=config.dry_run, confirm=config.confirm or None,
                                       accept_no_undo=config.accept_no_undo,
                                       on_progress=progress_logger(context, phase.progress_every),
                                       max_rows=config.max_rows, batch_size=config.batch_size)
            except DbsweepError as exc:
                raise failure(exc, refused=str(exc)) from None
            if config.dry_run:
                context.log_event(dg.AssetObservation(
                    asset_key=key, metadata=dry_run_metadata(report), tags={DRY_RUN_TAG: "true"},
                    partition=context.partition_key if context.has_partition_key else None))
                return
            metadata = apply_metadata(report, phase.archive)
            if report.state != "finished":
                raise dg.Failure(description=f"stopped early ({report.stop_reason}); relaunch to resume run "
                                             f"{report.run_id}", metadata=metadata)
            yield dg.Output({"plan_id": plan.plan_id, "dry_run": False, "run_id": report.run_id,
                             "target": _target_of(profile) or ""}, metadata=metadata,
                            tags={DRY_RUN_TAG: "false"})

        return apply

    def verified(self):
        names, policy_name = self.names, self.names.policy
        key = names.key("verified")

        @dg.asset(key=key, group_name=names.group, tags=names.asset_tags, ins={"applied": dg.AssetIn(names.key("apply"))},
                  check_specs=[dg.AssetCheckSpec("postconditions", asset=key, description=(
                      "The kind's Great Expectations verification suite on the database after the change: nothing "
                      "selected remains, survivors counted, constraints present."))],
                  partitions_def=self.partitions,
                  description=f"Post-conditions of {names.path}, as Great Expectations results.")
        def verified(context: dg.AssetExecutionContext, applied: dict, dbsweep: DbsweepResource):
            from expectations.dagster_checks import check_result
            from expectations.runner import verification

            policy = dbsweep.policy(policy_name)
            target = dbsweep.target(policy, applied.get("target") or None)
            plan = service.load_plan(target, applied["plan_id"])
            rows = service.verify(target, plan)
            verdict = verification(plan, rows)  # only after a real run: a dry run's apply has no output
            yield dg.MaterializeResult(metadata={
                "plan_id": plan.plan_id, "passed": verdict.passed,
                "postconditions": dg.MetadataValue.md(pd.DataFrame(rows).astype(str).to_markdown(index=False)),
            })
            yield check_result(verdict, plan.plan_id, check_name="postconditions", severity=dg.AssetCheckSeverity.ERROR)

        return verified
