"""`dbsweep restore` as a Dagster job, one per policy: undo a run from what it recorded."""

import dagster as dg
from pydantic import Field

from dbsweep.errors import DbsweepError
from dbsweep.restore import restore_run
from resources import DbsweepResource


class RestoreConfig(dg.Config):
    run_id: str = Field(description="The dbsweep run to undo, as `dbsweep status` lists it.")


def build_restore_job(policy_name: str) -> dg.JobDefinition:
    @dg.op(name=f"{policy_name}__restore_run", tags={"dbsweep/policy": policy_name})
    def restore_op(context: dg.OpExecutionContext, config: RestoreConfig, dbsweep: DbsweepResource) -> dg.Output:
        policy = dbsweep.policy(policy_name)
        target = dbsweep.target(policy)
        try:
            report = restore_run(target.engine, config.run_id, policy.archive_dir)
        except DbsweepError as exc:
            raise dg.Failure(description=str(exc), metadata={"exit_code": exc.exit_code}) from None
        context.log.info(f"run {config.run_id}: {'already restored; ' if report.already_restored else ''}{report.detail}")
        return dg.Output(None, metadata={
            "run_id": config.run_id, "phase": report.phase, "batches": report.batches,
            "rows_archived": report.rows_archived, "rows_restored": report.rows_restored,
            "rows_skipped": report.rows_skipped, "already_restored": report.already_restored,
        })

    @dg.job(name=f"{policy_name}__restore", description=f"Undo a {policy_name} run from its archive or recorded values.",
            tags={"dbsweep/policy": policy_name})
    def restore_job():
        restore_op()

    return restore_job
