"""Dagster metadata of a phase's assets, from the engine's plan and reports; and the failure a
dbsweep refusal or error becomes."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from dbsweep.errors import DbsweepError
from dbsweep.report import human_bytes


def failure(exc: DbsweepError, **metadata) -> dg.Failure:
    """The step fails with dbsweep's one line and the exit code the CLI would give."""
    return dg.Failure(description=str(exc), metadata={"exit_code": exc.exit_code, **metadata})


def profile_metadata(plan, target, frame: pd.DataFrame, window) -> dict:
    first = plan.profile[0] if plan.profile else {}
    rows_total = sum(r.get("rows_total") or 0 for r in plan.profile)
    metadata = {
        "plan_id": plan.plan_id,
        "env": target.env,
        "target": target.display_url,
        "cutoff": str(plan.cutoff) if plan.cutoff else "-",
        "rows_total": rows_total,
        "rows_selected": plan.rows_selected,
        "fraction": float(first.get("fraction_selected", 0.0)) if len(plan.profile) == 1 else
        plan.rows_selected / max(1, rows_total),
        "oldest_selected": str(first.get("oldest_selected") or "-"),
        "newest_selected": str(first.get("newest_selected") or "-"),
        "dagster/row_count": rows_total,
        "estimated_bytes": dg.MetadataValue.int(sum(r.get("est_bytes") or 0 for r in plan.profile)),
        "estimated_size": human_bytes(sum(r.get("est_bytes") or 0 for r in plan.profile)),
        "profile": dg.MetadataValue.md(frame.astype(str).to_markdown(index=False)),
    }
    if plan.histogram:  # youngest first, as the plan counts them
        rows = "\n".join(f"| {age} | {count:,} |" for age, count in plan.histogram.items())
        metadata["age_histogram"] = dg.MetadataValue.md(f"| age | rows |\n|---|---:|\n{rows}")
    if window is not None:
        metadata["window"] = f"{window[0].isoformat()} to {window[1].isoformat()}"
    waiting = [f"{row['table']}: {row['detail']}" for row in plan.profile if row.get("due")]
    if waiting:
        metadata["waiting"] = "; ".join(waiting)
    if plan.checks:
        metadata["preconditions"] = dg.MetadataValue.md(pd.DataFrame(plan.checks).to_markdown(index=False))
    return metadata


def dry_run_metadata(report) -> dict:
    return {"dry_run": True, "plan_id": report.plan_id, "rows": report.rows,
            "batches_estimate": report.batches_estimate, "resumes_run": report.resumes_run or "-"}


def apply_metadata(report, archive: str) -> dict:
    return {
        "dry_run": False, "plan_id": report.plan_id, "run_id": report.run_id, "state": report.state,
        "stop_reason": report.stop_reason, "rows": report.rows, "rows_per_s": round(report.rows_per_s, 1),
        "batches": report.batches, "batch_p50_ms": round(report.batch_ms["p50"], 1),
        "batch_p95_ms": round(report.batch_ms["p95"], 1), "batch_max_ms": round(report.batch_ms["max"], 1),
        "resumed": report.resumed, "archive": archive,
        "replica_pauses": report.replica_pauses, "replica_paused_s": round(report.replica_paused_s, 1),
    }
