"""`dbsweep health` in Dagster, one asset per policy: the report as metadata, a check that fails
on a problem (a blocked session, connections nearly exhausted), and one check per configured
[alerts] threshold, WARN or ERROR as the policy says, so the sensors can deliver them."""

import dagster as dg
import pandas as pd

from dbsweep.alerts import ALERTS, evaluate
from dbsweep.errors import DbsweepError
from dbsweep.health import PROBLEM, WARN, health_report
from resources import DbsweepResource

from .fleet import fleet_target
from .metadata import failure

ALERT_DESCRIPTIONS = {
    "rows_due": "Rows a phase's rule would change now stay under the policy's bound.",
    "oldest_row": "No row the rule deletes is older than the retention plus the policy's grace.",
    "dead_tuples": "Dead tuples stay under the policy's share of the live rows.",
    "table_bytes": "Every policy table stays under the policy's size.",
    "blocked_sessions": "No more blocked sessions than the policy allows.",
    "run_failed": "Each phase's last run finished (not failed, stopped early or refused).",
}


def build_health(policy, targets: dg.PartitionsDefinition | None = None) -> tuple[dg.AssetsDefinition,
                                                                                  dg.JobDefinition]:
    policy_name = policy.name
    key = dg.AssetKey([policy_name, "health"])
    alerts = [name for name in ALERTS if getattr(policy.alerts, name) is not None]
    specs = [dg.AssetCheckSpec("no_problems", asset=key, description="No health finding is a problem.")]
    specs += [dg.AssetCheckSpec(f"alert_{name}", asset=key, description=ALERT_DESCRIPTIONS[name]) for name in alerts]

    @dg.asset(key=key, group_name=f"{policy_name}_health".replace("-", "_"), check_specs=specs, partitions_def=targets,
              description=f"Health of {policy_name}'s database: connections, tables, dead tuples, what each retention "
                          "rule has due, blocked and long-running sessions; and its [alerts].")
    def health(context: dg.AssetExecutionContext, dbsweep: DbsweepResource):
        policy_now = dbsweep.policy(policy_name)
        try:
            target = dbsweep.target(policy_now, fleet_target(context))
            findings = health_report(policy_now, target)
            results = evaluate(policy_now, target)
        except DbsweepError as exc:
            raise failure(exc) from None
        frame = pd.DataFrame([vars(f) for f in findings])
        problems = [f for f in findings if f.status == PROBLEM]
        yield dg.MaterializeResult(metadata={
            "target": target.display_url, "problems": len(problems),
            "warnings": sum(f.status == WARN for f in findings),
            "report": dg.MetadataValue.md(frame.to_markdown(index=False)),
        })
        yield dg.AssetCheckResult(check_name="no_problems", passed=not problems,
                                  description="; ".join(f"{f.check} {f.subject}: {f.value}" for f in problems) or "none")
        for name in alerts:
            mine = [r for r in results if r.alert == name]
            fired = [r for r in mine if r.fired]
            severity = getattr(policy_now.alerts, name).severity
            yield dg.AssetCheckResult(
                check_name=f"alert_{name}", passed=not fired,
                severity=dg.AssetCheckSeverity.ERROR if severity == "error" else dg.AssetCheckSeverity.WARN,
                description="; ".join(f"{r.subject}: {r.text}" for r in (fired or mine)) or "nothing to check",
                metadata={"fired": len(fired), "checked": len(mine)})

    job = dg.define_asset_job(name=f"{policy_name}__health_report", selection=dg.AssetSelection.assets(key),
                              description=f"The health report of {policy_name}'s database.",
                              tags={"dbsweep/policy": policy_name})
    return health, job
