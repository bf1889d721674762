"""The integrity verification (seed 004: weekly), one asset per policy: every phase's latest plan
verified again against the database, one check per phase, as `dbsweep verify` does."""

import dagster as dg

from dbsweep import service
from dbsweep.errors import DbsweepError
from dbsweep.ledger import Ledger
from resources import DbsweepResource

from .fleet import fleet_target
from .metadata import failure


def build_integrity(policy, targets: dg.PartitionsDefinition | None = None) -> dg.AssetsDefinition:
    policy_name = policy.name
    key = dg.AssetKey([policy_name, "integrity"])
    specs = [dg.AssetCheckSpec(f"verified_{phase.name}".replace("-", "_"), asset=key,
                               description=f"Phase {phase.name}: its latest plan's post-conditions hold now "
                                           "(Great Expectations verification suite).")
             for phase in policy.phases]

    @dg.asset(key=key, group_name=f"{policy_name}_health".replace("-", "_"), check_specs=specs, partitions_def=targets,
              description=f"Every phase of {policy_name} verified again: what its latest plan promised still holds.")
    def integrity(context: dg.AssetExecutionContext, dbsweep: DbsweepResource):
        from expectations.runner import verification

        policy_now = dbsweep.policy(policy_name)
        try:
            target = dbsweep.target(policy_now, fleet_target(context))
        except DbsweepError as exc:
            raise failure(exc) from None
        ledger = Ledger(target.engine)
        ledger.ensure()
        summary = {}
        for phase in policy_now.phases:
            check = f"verified_{phase.name}".replace("-", "_")
            latest = ledger.latest_plan(policy_now.name, phase.name, target.env)
            if latest is None or ledger.restored_run(latest.plan_id) is not None:
                why = "no plan yet" if latest is None else f"the run of plan {latest.plan_id} was restored (undone)"
                summary[phase.name] = why
                yield dg.AssetCheckResult(check_name=check, passed=True, description=f"nothing to verify: {why}")
                continue
            verdict = verification(latest, service.verify(target, latest))
            summary[phase.name] = verdict.summary
            yield dg.AssetCheckResult(check_name=check, passed=verdict.passed, severity=dg.AssetCheckSeverity.ERROR,
                                      description=f"plan {latest.plan_id}: {verdict.summary}",
                                      metadata={"plan_id": latest.plan_id})
        yield dg.MaterializeResult(metadata={f"{phase}": text for phase, text in summary.items()})

    return integrity
