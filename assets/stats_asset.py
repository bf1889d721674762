"""`dbsweep stats` in Dagster, one asset per policy: each phase's numbers as numeric metadata, so
Dagster plots them over the asset's materializations."""

import dagster as dg

from dbsweep.errors import DbsweepError
from dbsweep.ledger import Ledger
from dbsweep.stats import phase_stats
from resources import DbsweepResource

from .fleet import fleet_target
from .metadata import failure


def build_stats(policy_name: str, targets: dg.PartitionsDefinition | None = None) -> tuple[dg.AssetsDefinition,
                                                                                           dg.JobDefinition]:
    key = dg.AssetKey([policy_name, "stats"])

    @dg.asset(key=key, group_name=f"{policy_name}_health".replace("-", "_"), partitions_def=targets,
              description=f"Statistics of {policy_name}'s runs from the ledger: per phase runs, success rate, rows "
                          "changed, last success, median duration and rows/s.")
    def stats(context: dg.AssetExecutionContext, dbsweep: DbsweepResource) -> dg.MaterializeResult:
        policy = dbsweep.policy(policy_name)
        try:
            ledger = Ledger(dbsweep.target(policy, fleet_target(context)).engine)
        except DbsweepError as exc:
            raise failure(exc) from None
        ledger.ensure()
        metadata = {}
        for s in phase_stats(ledger, policy.name, [p.name for p in policy.phases]):
            metadata[f"{s.phase}/runs"] = dg.MetadataValue.int(s.runs)
            metadata[f"{s.phase}/succeeded"] = dg.MetadataValue.int(s.succeeded)
            metadata[f"{s.phase}/refused"] = dg.MetadataValue.int(s.refused)
            metadata[f"{s.phase}/rows_changed"] = dg.MetadataValue.int(s.rows_changed)
            if s.success_rate is not None:
                metadata[f"{s.phase}/success_rate"] = dg.MetadataValue.float(s.success_rate)
            if s.last_success is not None:
                metadata[f"{s.phase}/last_success"] = dg.MetadataValue.timestamp(s.last_success)
            if s.median_seconds is not None:
                metadata[f"{s.phase}/median_seconds"] = dg.MetadataValue.float(s.median_seconds)
                metadata[f"{s.phase}/median_rows_per_s"] = dg.MetadataValue.float(s.median_rows_per_s)
        return dg.MaterializeResult(metadata=metadata)

    job = dg.define_asset_job(name=f"{policy_name}__stats_report", selection=dg.AssetSelection.assets(key),
                              description=f"Statistics of {policy_name}'s runs.", tags={"dbsweep/policy": policy_name})
    return stats, job
