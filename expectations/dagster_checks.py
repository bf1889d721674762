"""Turn a GE verdict into a Dagster asset check result (the only place GE meets Dagster)."""

from __future__ import annotations

import dagster as dg

from dbsweep.plan import GateVerdict


def verdict_markdown(verdict: GateVerdict) -> str:
    lines = ["| expectation | column | ok | unexpected | why |", "|---|---|---|---|---|"]
    for r in verdict.results:
        column = r["kwargs"].get("column") or f"{r['kwargs'].get('column_A')} > {r['kwargs'].get('column_B')}"
        lines.append(f"| {r['expectation']} | {column} | {'yes' if r['success'] else '**no**'} | "
                     f"{r['unexpected'][:3]} | {r['why']} |")
    return "\n".join(lines)


def check_metadata(verdict: GateVerdict, plan_id: str) -> dict:
    return {
        "plan_id": plan_id,
        "summary": verdict.summary,
        "expectations": dg.MetadataValue.md(verdict_markdown(verdict)),
        "checked_at": verdict.checked_at.isoformat(),
        **({"report": dg.MetadataValue.path(verdict.report)} if verdict.report else {}),
    }


def check_result(verdict: GateVerdict, plan_id: str, check_name: str | None = None,
                 severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=check_name, passed=verdict.passed, severity=severity,
                               description=verdict.summary, metadata=check_metadata(verdict, plan_id))
