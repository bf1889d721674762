"""One history: what `dbsweep plan`, `run` and `verify` do from the command line, reported to the
Dagster instance in DAGSTER_HOME as runless asset events on the same assets a Dagster run would
materialize, tagged `dbsweep/source: cli`. The CLI imports this only when DAGSTER_HOME is set."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from expectations.dagster_checks import check_metadata

from .metadata import apply_metadata, dry_run_metadata, profile_metadata
from .naming import DRY_RUN_TAG, PhaseNames

SOURCE = {"dbsweep/source": "cli"}


def _instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.get()


def _names(plan) -> PhaseNames:
    return PhaseNames(plan.policy, plan.phase, plan.kind)


def plan_made(plan, target) -> None:
    names, instance = _names(plan), _instance()
    frame = pd.DataFrame(plan.profile).assign(plan_id=plan.plan_id)
    window = plan.steps[0].spec.get("window") if plan.steps else None
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=names.key("profile"), metadata=profile_metadata(plan, target, frame, window), tags=SOURCE))
    if plan.gate is not None:
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=names.key("profile"), check_name="gate", passed=plan.gate.passed,
            description=plan.gate.summary, metadata=check_metadata(plan.gate, plan.plan_id)))


def run_done(plan, report, dry_run: bool, archive: str) -> None:
    key = _names(plan).key("apply")
    if dry_run:  # a dry run changes nothing: an observation, never a materialization
        _instance().report_runless_asset_event(dg.AssetObservation(
            asset_key=key, metadata=dry_run_metadata(report), tags={**SOURCE, DRY_RUN_TAG: "true"}))
        return
    _instance().report_runless_asset_event(dg.AssetMaterialization(
        asset_key=key, metadata=apply_metadata(report, archive), tags={**SOURCE, DRY_RUN_TAG: "false"}))


def verified(plan, rows: list[dict], verdict) -> None:
    key, instance = _names(plan).key("verified"), _instance()
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, tags=SOURCE, metadata={
        "plan_id": plan.plan_id, "passed": verdict.passed,
        "postconditions": dg.MetadataValue.md(pd.DataFrame(rows).astype(str).to_markdown(index=False))}))
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=key, check_name="postconditions", passed=verdict.passed, description=verdict.summary,
        metadata=check_metadata(verdict, plan.plan_id)))
