"""Run a phase kind's suite with GE 1.x (ephemeral context, suite from JSON, Checkpoint.run)
and return a GateVerdict the engine records in its ledger."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import pandas as pd

from dbsweep.files import exclusively, write_atomically
from dbsweep.kinds import kind_named
from dbsweep.plan import GateVerdict, PhasePlan, utcnow

SUITES = Path(__file__).parent / "suites"
DOCS_SITE = "dbsweep"
LATEST = "latest.json"


@lru_cache(maxsize=1)
def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


def load_suite(name: str) -> dict:
    return json.loads((SUITES / f"{name}.json").read_text())


def _suite_columns(suite: dict) -> list[str]:
    return list(dict.fromkeys(e["kwargs"]["column"] for e in suite["expectations"] if "column" in e["kwargs"]))


def run_suite(name: str, frame: pd.DataFrame, parameters: dict | None = None, site: Path | None = None) -> GateVerdict:
    """The suite on the frame; with `site`, the validation is also rendered into that folder as
    Great Expectations Data Docs (its page, the suite's page and an index)."""
    if frame.empty and not len(frame.columns):  # nothing to judge (a retire waiting out its grace)
        frame = pd.DataFrame(columns=_suite_columns(load_suite(name)))
    gx = _gx()
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    suite = context.suites.add(ExpectationSuite(**load_suite(name)))
    asset = context.data_sources.add_pandas("dbsweep").add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe("whole")
    validation = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    actions = []
    if site is not None:
        context.add_data_docs_site(site_name=DOCS_SITE, site_config={
            "class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)}})
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE]))
    checkpoint = context.checkpoints.add(gx.Checkpoint(name=f"{name}_checkpoint", validation_definitions=[validation],
                                                       actions=actions))
    result = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters or {})
    results = []
    for validation_result in result.run_results.values():
        for item in validation_result.results:
            config = item.expectation_config
            kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
            results.append({
                "expectation": config.type,
                "kwargs": json.loads(json.dumps(kwargs, default=str)),
                "success": bool(item.success),
                "unexpected": json.loads(json.dumps(item.result.get("partial_unexpected_list", []), default=str)),
                "why": (config.meta or {}).get("why", ""),
            })
    failed = [r for r in results if not r["success"]]
    summary = (f"{len(results)}/{len(results)} expectations passed" if not failed else
               "failed: " + "; ".join(_describe(r) for r in failed))
    report = None
    if site is not None:
        from .offline import make_offline

        [page] = context.get_docs_sites_urls(resource_identifier=next(iter(result.run_results)), site_name=DOCS_SITE)
        report = page["site_url"].removeprefix("file://")
        make_offline(site, Path(report), frame, results)
    return GateVerdict(passed=bool(result.success), checked_at=utcnow(), summary=summary, results=results,
                       report=report)


def _describe(result: dict) -> str:
    column = result["kwargs"].get("column") or f"{result['kwargs'].get('column_A')} vs {result['kwargs'].get('column_B')}"
    what = result["why"] or result["expectation"]
    return f"{what} ({column}: unexpected {result['unexpected'][:3]})"


def profile_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for name in frame.columns:
        if name in ("cutoff", "oldest_selected", "newest_selected"):
            frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame


def reports_dir(policy: str) -> Path:
    """The policy's expectation reports: $DBSWEEP_HOME/reports/<policy>/<phase>/<gate or verification>-…/."""
    from dbsweep.embedded import dbsweep_home

    return dbsweep_home() / "reports" / policy


def _site(plan: PhasePlan, what: str) -> Path:
    """A Data Docs site of its own for each validation: a site build keeps only what its context
    validated, so validations sharing one site would erase each other's pages."""
    return reports_dir(plan.policy) / plan.phase / f"{what}-{plan.plan_id}-{utcnow():%Y%m%dT%H%M%S%fZ}"


def newest_page(policy: str, phase: str, what: str, plan_ids: set[str]) -> str | None:
    """The newest `what` ("gate" or "verification") page of the phase among the plans `plan_ids`
    (a database's ledger's): pages of other databases, or of one dropped since, are not its own."""
    folder = reports_dir(policy) / phase
    sites = []
    for site in folder.glob(f"{what}-*-*") if folder.is_dir() else []:
        _, plan_id, stamp = site.name.rsplit("-", 2) if site.name.count("-") >= 2 else (None, None, None)
        if plan_id in plan_ids:
            sites.append((stamp, site))
    for _, site in sorted(sites, reverse=True):
        page = next(iter(sorted(site.glob("validations/**/*.html"))), None)
        if page is not None:
            return str(page)
    return None


def latest_reports(policy: str) -> dict:
    """{phase: {"gate": page, "verification": page}}: each phase's newest report pages."""
    index = reports_dir(policy) / LATEST
    return json.loads(index.read_text()) if index.exists() else {}


def _remember(plan: PhasePlan, what: str, verdict: GateVerdict) -> GateVerdict:
    """The index of the newest pages, updated under a lock and replaced whole: the targets of a
    fleet share their policy's index, and write it from processes of their own at the same time."""
    index = reports_dir(plan.policy) / LATEST
    with exclusively(index):
        latest = latest_reports(plan.policy)
        latest.setdefault(plan.phase, {})[what] = verdict.report
        write_atomically(index, json.dumps(latest, indent=1, sort_keys=True))
    return verdict


def gate(plan: PhasePlan) -> GateVerdict:
    """The plan's gate: its kind's gate suite on its profile, bounded by the policy's expect table."""
    kind = kind_named(plan.kind)
    verdict = run_suite(kind.gate_suite, profile_frame(kind.gate_rows(plan)), plan.expect, _site(plan, "gate"))
    return _remember(plan, "gate", verdict)


def verification(plan: PhasePlan, rows: list[dict]) -> GateVerdict:
    verdict = run_suite(kind_named(plan.kind).verify_suite, pd.DataFrame(rows), plan.expect, _site(plan, "verification"))
    return _remember(plan, "verification", verdict)
