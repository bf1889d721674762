"""`dbsweep health` in Dagster, one asset per policy: the report as metadata, and a check that
fails on a problem (a blocked session, connections nearly exhausted) so an alert can follow it."""

import dagster as dg
import pandas as pd

from dbsweep.errors import DbsweepError
from dbsweep.health import PROBLEM, WARN, health_report
from resources import DbsweepResource


def build_health(policy_name: str) -> tuple[dg.AssetsDefinition, dg.JobDefinition]:
    key = dg.AssetKey([policy_name, "health"])

    @dg.asset(key=key, group_name=f"{policy_name}_health".replace("-", "_"),
              check_specs=[dg.AssetCheckSpec("no_problems", asset=key)],
              description=f"Health of {policy_name}'s database: connections, tables, dead tuples, what each retention "
                          "rule has due, blocked and long-running sessions.")
    def health(context: dg.AssetExecutionContext, dbsweep: DbsweepResource):
        policy = dbsweep.policy(policy_name)
        target = dbsweep.target(policy)
        try:
            findings = health_report(policy, target)
        except DbsweepError as exc:
            raise dg.Failure(description=str(exc), metadata={"exit_code": exc.exit_code}) from None
        frame = pd.DataFrame([vars(f) for f in findings])
        problems = [f for f in findings if f.status == PROBLEM]
        yield dg.MaterializeResult(metadata={
            "target": target.display_url, "problems": len(problems),
            "warnings": sum(f.status == WARN for f in findings),
            "report": dg.MetadataValue.md(frame.to_markdown(index=False)),
        })
        yield dg.AssetCheckResult(check_name="no_problems", passed=not problems,
                                  description="; ".join(f"{f.check} {f.subject}: {f.value}" for f in problems) or "none")

    job = dg.define_asset_job(name=f"{policy_name}__health_report", selection=dg.AssetSelection.assets(key),
                              description=f"The health report of {policy_name}'s database.",
                              tags={"dbsweep/policy": policy_name})
    return health, job
