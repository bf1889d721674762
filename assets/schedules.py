"""Schedules from policies. A phase's `schedule` runs it for real: the policy's cron line is its
author's confirmation, and every schedule is created stopped until someone switches it on."""

from __future__ import annotations

import dagster as dg

from .naming import PhaseNames


def phase_schedule(names: PhaseNames, cron: str | None, job) -> dg.ScheduleDefinition | None:
    if not cron:
        return None
    return dg.ScheduleDefinition(
        name=names.schedule, job=job, cron_schedule=cron,
        run_config={"ops": {names.apply_op: {"config": {"dry_run": False, "confirm": names.phase}}}},
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
