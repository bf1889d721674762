"""`dbsweep discover` in Dagster, one asset per policy: what the policy's database holds that a
cleanup could take (read-only), each proposal with its evidence, as metadata."""

import dagster as dg

from dbsweep.discover import discover
from dbsweep.errors import DbsweepError
from resources import DbsweepResource

from .fleet import fleet_target
from .metadata import failure


def build_discovery(policy_name: str, targets: dg.PartitionsDefinition | None = None) -> tuple[dg.AssetsDefinition,
                                                                                               dg.JobDefinition]:
    key = dg.AssetKey([policy_name, "discovery"])

    @dg.asset(key=key, group_name=f"{policy_name}_health".replace("-", "_"), partitions_def=targets,
              description=f"Discovery of {policy_name}'s database, read-only: old rows, duplicates, polymorphic "
                          "children, duplicate roots, unused copies and health, each with its evidence and how sure.")
    def discovery(context: dg.AssetExecutionContext, dbsweep: DbsweepResource) -> dg.MaterializeResult:
        policy = dbsweep.policy(policy_name)
        try:
            found = discover(dbsweep.target(policy, fleet_target(context)).engine)
        except DbsweepError as exc:
            raise failure(exc) from None
        rows = ["| kind | table | why | how sure | draft phase |", "|---|---|---|---|---|"]
        rows += [f"| {p.kind} | {p.table} | {p.why} | {p.sure} | {'yes' if p.phase else '-'} |" for p in found.proposals]
        metadata = {f"proposals/{kind}": dg.MetadataValue.int(sum(1 for p in found.proposals if p.kind == kind))
                    for kind in ("retention", "dedupe", "cascade", "merge", "retire", "health")}
        metadata |= {"tables": dg.MetadataValue.int(found.tables), "seconds": dg.MetadataValue.float(found.seconds),
                     "proposals": dg.MetadataValue.md("\n".join(rows)), "discovery": dg.MetadataValue.json(found.as_json())}
        return dg.MaterializeResult(metadata=metadata)

    job = dg.define_asset_job(name=f"{policy_name}__discover", selection=dg.AssetSelection.assets(key),
                              description=f"Discover what {policy_name}'s database holds to clean (read-only).",
                              tags={"dbsweep/policy": policy_name})
    return discovery, job
