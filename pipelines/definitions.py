"""Dagster code location: every policy in the policy folder becomes one asset graph per phase,
with its gate check, a job per phase and the schedules the policy declares; a retention phase
with `backfill` gets a second graph, partitioned by time windows, for Dagster backfills."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets import build_backfill, build_discovery, build_health, build_phase, build_restore_job, build_stats
from assets.fleet import target_partitions, targets_sensor
from assets.integrity_asset import build_integrity
from assets.naming import PhaseNames
from assets.schedules import purpose_jobs
from assets.sensors import SENSORS
from dbsweep.policy import load_policy
from resources import DbsweepResource
from resources.dbsweep_resource import default_policy_dir


def build_definitions(policy_dir: str | None = None) -> dg.Definitions:
    folder = Path(policy_dir or default_policy_dir())
    assets, checks, jobs, schedules, sensors = [], [], [], [], list(SENSORS)
    for path in sorted(folder.glob("*.toml")):
        policy = load_policy(path)  # refuses a policy whose name is not its file's
        targets = target_partitions(policy)
        if isinstance(targets, dg.DynamicPartitionsDefinition):
            sensors.append(targets_sensor(policy, targets))
        for phase in policy.phases:
            for built in (build_phase(policy.name, phase, targets), build_backfill(policy.name, phase, targets)):
                if built is None:
                    continue
                assets += built.assets
                checks += built.checks
                jobs.append(built.job)
                if built.schedule:
                    schedules.append(built.schedule)
        jobs.append(build_restore_job(policy.name, targets))
        for asset, job in (build_health(policy, targets), build_stats(policy.name, targets),
                           build_discovery(policy.name, targets)):
            assets.append(asset)
            jobs.append(job)
        assets.append(build_integrity(policy, targets))
        phase_keys = {p.name: [PhaseNames(policy.name, p.name, p.kind).key(leaf) for leaf in ("profile", "apply", "verified")]
                      for p in policy.phases}
        purpose, purpose_schedules = purpose_jobs(policy, phase_keys, targets)
        jobs += purpose
        schedules += purpose_schedules
    # each run is one database's steps in a row, and its pool already allows one step at a time:
    # steps in the run's own process (one pod per run under Kubernetes), not a process per step
    return dg.Definitions(
        executor=dg.in_process_executor,
        assets=assets, asset_checks=checks, jobs=jobs, schedules=schedules, sensors=sensors,
        resources={"dbsweep": DbsweepResource(policy_dir=str(folder))},
    )


defs = build_definitions()
