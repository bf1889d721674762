"""Schedules from policies. A phase's `schedule` runs it for real: the policy's cron line is its
author's confirmation, and every schedule is created stopped until someone switches it on."""

from __future__ import annotations

import dagster as dg

from .naming import PhaseNames


def phase_schedule(names: PhaseNames, cron: str | None, job, targets: dg.PartitionsDefinition | None = None):
    """The phase's schedule (stopped until switched on)."""
    if not cron:
        return None
    run_config = {"ops": {names.apply_op: {"config": {"dry_run": False, "confirm": names.phase}}}}
    return stopped_schedule(names.schedule, job, cron, run_config, targets)


def stopped_schedule(name: str, job, cron: str, run_config: dict, targets: dg.PartitionsDefinition | None):
    """A schedule created stopped; for a fleet (`targets`), each tick asks for one run per target
    (the run queue keeps one run per database at a time)."""
    if targets is None:
        return dg.ScheduleDefinition(name=name, job=job, cron_schedule=cron, run_config=run_config,
                                     default_status=dg.DefaultScheduleStatus.STOPPED)

    @dg.schedule(name=name, job=job, cron_schedule=cron, default_status=dg.DefaultScheduleStatus.STOPPED)
    def every_target(context: dg.ScheduleEvaluationContext):
        dynamic = isinstance(targets, dg.DynamicPartitionsDefinition)
        keys = targets.get_partition_keys(dynamic_partitions_store=context.instance if dynamic else None)
        return [dg.RunRequest(run_key=f"{context.scheduled_execution_time:%Y%m%dT%H%M}-{key}", partition_key=key,
                              run_config=run_config) for key in keys]

    return every_target


def purpose_jobs(policy, phase_keys: dict[str, list[dg.AssetKey]],
                 targets: dg.PartitionsDefinition | None = None) -> tuple[list, list]:
    """The policy's jobs by purpose, each with its schedule when [schedules] gives one (stopped):
    `<policy>__check` (every phase's profile and gate, nothing applied), `<policy>__apply` (the
    phases marked `apply_scheduled`, for real) and `<policy>__integrity_report` (every phase verified
    again, the health report and the statistics). `phase_keys`: each phase's profile/apply/verified.
    For a fleet every asset is partitioned by target, and so is each of these jobs' schedule."""
    name = policy.name
    tags = {"dbsweep/policy": name}
    jobs = {
        "check": dg.define_asset_job(
            f"{name}__check", selection=dg.AssetSelection.assets(*(keys[0] for keys in phase_keys.values())),
            description=f"{name}: every phase's profile and gate; nothing is applied.", tags=tags),
        "integrity": dg.define_asset_job(
            f"{name}__integrity_report", selection=dg.AssetSelection.assets(
                dg.AssetKey([name, "integrity"]), dg.AssetKey([name, "health"]), dg.AssetKey([name, "stats"])),
            description=f"{name}: every phase verified again, the health report and the statistics.", tags=tags),
    }
    marked = [phase for phase in policy.phases if phase.apply_scheduled]
    run_config = {}
    if marked:
        jobs["apply"] = dg.define_asset_job(
            f"{name}__apply", selection=dg.AssetSelection.assets(*(k for p in marked for k in phase_keys[p.name])),
            description=f"{name}: the cleanup of {', '.join(p.name for p in marked)}, for real.", tags=tags)
        run_config = {"ops": {PhaseNames(name, p.name, p.kind).apply_op: {"config": {"dry_run": False,
                                                                                     "confirm": p.name}}
                              for p in marked}}
    schedules = []
    for purpose, job in jobs.items():
        cron = getattr(policy.schedules, purpose)
        if cron:
            schedules.append(stopped_schedule(f"{job.name}__schedule", job, cron,
                                              run_config if purpose == "apply" else {}, targets))
    return list(jobs.values()), schedules
