"""`dbsweep demo` and `dbsweep ui`: the embedded PostgreSQL, sample data, the whole workflow."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import service
from .demo import DATASETS
from .embedded import dbsweep_home
from .errors import BadInput, DbsweepError
from .policy import load_policy
from .target import connect

REPO = Path(__file__).resolve().parents[1]


def find_file(relative: str) -> Path:
    for base in (Path.cwd(), REPO):
        if (base / relative).exists():
            return base / relative
    raise BadInput(f"cannot find {relative} (run from the dbsweep checkout)")


def run_demo(out: Console, scale: float) -> None:
    from expectations.runner import gate, verification

    from .kinds import kind_named

    summary = Table(title=f"dbsweep demo (scale {scale:g})")
    for name in ("policy", "phase", "kind", "tables", "rows before", "rows after", "changed", "rows/s", "batches",
                 "longest batch", "time", "verified"):
        summary.add_column(name, justify="left" if name in ("policy", "phase", "kind", "tables", "verified") else "right")
    for dataset_name, dataset in DATASETS.items():
        policy = load_policy(find_file(f"policies/{dataset_name}.toml"))
        if policy.database.env["dev"].url != "embedded":
            raise BadInput(f"{policy.path}: the demo only writes to the embedded database (env dev)")
        target = connect(policy, "dev")
        out.print(f"[bold]{policy.name}[/]: loading sample data into {target.display_url}")
        dataset.create(target.engine, scale)
        for phase in policy.phases:
            started = time.monotonic()
            plan = service.make_plan(policy, phase.name, target)
            service.record_gate(target, plan, gate(plan))
            if not plan.gate.passed:
                raise DbsweepError(f"demo gate refused {phase.name}: {plan.gate.summary}")
            before = _rows(plan)
            report = service.apply(policy, target, plan, dry_run=False)
            verdict = verification(plan, service.verify(target, plan))
            after = before if kind_named(phase.kind).changes_rows_in_place else before - report.rows
            names = list(dict.fromkeys(row["table"] for row in plan.profile))
            tables = ", ".join(names) if len(names) <= 2 else f"{names[0]} + {len(names) - 1} children"
            summary.add_row(policy.name, phase.name, phase.kind, tables, f"{before:,}", f"{after:,}", f"{report.rows:,}",
                            f"{report.rows_per_s:,.0f}", f"{report.batches:,}", f"{report.batch_ms['max']:.0f} ms",
                            f"{time.monotonic() - started:.1f} s", "yes" if verdict.passed else "[red]NO[/]")
            if not verdict.passed:
                raise DbsweepError(f"demo verification failed for {phase.name}: {verdict.summary}")
    out.print(summary)


def _rows(plan) -> int:
    """Rows of the phase's tables (a reset profiles one table once per rule)."""
    return sum({row["table"]: row.get("rows_total") or 0 for row in plan.profile}.values())


def launch_ui(out: Console) -> None:
    workspace = find_file("workspace.yaml")
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(dbsweep_home() / "dagster")))
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists() or not settings.read_text().strip():
        # each policy's assets share a concurrency pool: one step at a time per database, so the
        # runs of a backfill queue instead of failing on the phase lock
        settings.write_text("concurrency:\n  pools:\n    default_limit: 1\n")
    for path in sorted((workspace.parent / "policies").glob("*.toml")):
        policy = load_policy(path)
        if policy.database.env[policy.database.default_env].url == "embedded":
            connect(policy)  # starts the embedded server and creates the policy's database
    beside = Path(sys.executable).parent / "dagster"  # the venv's, even when it is not activated
    dagster = str(beside) if beside.exists() else shutil.which("dagster")
    if dagster is None:
        raise DbsweepError("the `dagster` command is not installed in this environment")
    out.print(f"starting dagster dev (DAGSTER_HOME={home})")
    os.chdir(workspace.parent)
    os.execv(dagster, [dagster, "dev", "-w", str(workspace)])
