"""`dbsweep restore` as a Dagster job, one per policy: undo a run from what it recorded. For a
fleet, the run is looked up in the ledger of the target the config names."""

from typing import Optional

import dagster as dg
from pydantic import Field

from dbsweep.errors import BadInput, DbsweepError
from dbsweep.restore import restore_run
from resources import DbsweepResource

from .metadata import failure


class RestoreConfig(dg.Config):
    run_id: str = Field(description="The dbsweep run to undo, as `dbsweep status` lists it.")
    target: Optional[str] = Field(default=None, description="For a fleet: the target (database) the run changed, as "
                                                            "the partition of its assets names it.")


def build_restore_job(policy_name: str, targets: dg.PartitionsDefinition | None = None) -> dg.JobDefinition:
    @dg.op(name=f"{policy_name}__restore_run", tags={"dbsweep/policy": policy_name})
    def restore_op(context: dg.OpExecutionContext, config: RestoreConfig, dbsweep: DbsweepResource) -> dg.Output:
        policy = dbsweep.policy(policy_name)
        if targets is not None and not config.target:
            raise failure(BadInput(f"{policy_name} is a fleet of databases: give the run's target in the config "
                                   "(target: NAME)"))
        try:
            target = dbsweep.target(policy, config.target or None)
            report = restore_run(target.engine, config.run_id, policy.archive_dir)
        except DbsweepError as exc:
            raise failure(exc) from None
        where = f" on {config.target}" if config.target else ""
        done = "already restored; " if report.already_restored else ""
        context.log.info(f"run {config.run_id}{where}: {done}{report.detail}")
        return dg.Output(None, metadata={
            "run_id": config.run_id, "target": config.target or "", "phase": report.phase, "batches": report.batches,
            "rows_archived": report.rows_archived, "rows_restored": report.rows_restored,
            "rows_skipped": report.rows_skipped, "already_restored": report.already_restored,
        })

    @dg.job(name=f"{policy_name}__restore", description=f"Undo a {policy_name} run from its archive or recorded values.",
            tags={"dbsweep/policy": policy_name})
    def restore_job():
        restore_op()

    return restore_job
