"""A policy whose environment is a fleet of databases: each phase's graph, and the policy's health,
statistics and integrity assets, are partitioned by target (static partitions for a listed fleet,
dynamic ones for a discovered fleet, kept current by a sensor), so a backfill over the partitions
is one Dagster backfill over the fleet. A retention phase's backfill graph gets target × time
window (multi-partitions)."""

from __future__ import annotations

import os

import dagster as dg

from dbsweep.policy import Policy
from dbsweep.target import choose_env, is_fleet, target_names

TARGET, WINDOW = "target", "window"


def fleet_env(policy: Policy) -> str | None:
    """The env the code location serves (DBSWEEP_ENV, else the default), when it is a fleet."""
    env = choose_env(policy, os.environ.get("DBSWEEP_ENV"))
    return env if is_fleet(policy, env) else None


def target_partitions(policy: Policy) -> dg.PartitionsDefinition | None:
    env = fleet_env(policy)
    if env is None:
        return None
    config = policy.database.env[env]
    if config.targets is not None:
        return dg.StaticPartitionsDefinition([t.name for t in config.targets])
    return dg.DynamicPartitionsDefinition(name=f"{policy.name}__targets")


def combined(targets: dg.PartitionsDefinition | None, windows: dg.PartitionsDefinition | None):
    if targets is not None and windows is not None:
        return dg.MultiPartitionsDefinition({TARGET: targets, WINDOW: windows})
    return targets or windows


def partition_of(context, targets, windows) -> tuple[str | None, tuple | None]:
    """(target, time window) of the partition being materialized."""
    if not context.has_partition_key:
        return None, None
    if targets is not None and windows is not None:
        keys = context.partition_key.keys_by_dimension
        window = windows.time_window_for_partition_key(keys[WINDOW])
        return keys[TARGET], (window.start, window.end)
    if targets is not None:
        return context.partition_key, None
    return None, (context.partition_time_window.start, context.partition_time_window.end)


def fleet_target(context) -> str | None:
    """The target a policy-wide asset (health, statistics, integrity) is materialized for: its
    partition for a fleet, None for a policy with one database."""
    return context.partition_key if context.has_partition_key else None


def targets_sensor(policy: Policy, partitions: dg.DynamicPartitionsDefinition) -> dg.SensorDefinition:
    """Keeps a discovered fleet's partitions equal to the databases the server has now."""

    @dg.sensor(name=f"{policy.name}__targets", minimum_interval_seconds=300,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Adds a partition for each database of {policy.name}'s fleet created since, "
                           "and removes those dropped.")
    def discover(context: dg.SensorEvaluationContext):
        found = set(target_names(policy, fleet_env(policy)))
        known = set(context.instance.get_dynamic_partitions(partitions.name))
        requests = []
        if found - known:
            requests.append(partitions.build_add_request(sorted(found - known)))
        if known - found:
            requests.append(partitions.build_delete_request(sorted(known - found)))
        return dg.SensorResult(dynamic_partitions_requests=requests)

    return discover
