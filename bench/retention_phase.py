"""The retention phase both `purge_rebuild.py` and `scale.py` run: a policy on the embedded server
purging `readings` before 2026-01-01, and one plan, gate and run of it, timed apart."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dbsweep import service  # noqa: E402
from dbsweep.policy import load_policy  # noqa: E402
from dbsweep.target import connect  # noqa: E402

POLICY = """
[policy]
name = "{name}"
[database]
default_env = "dev"
database_name = "{database}"
env.dev = {{ url = "embedded" }}
[[phase]]
name = "purge"
kind = "retention"
table = "readings"
time_column = "created_at"
cutoff = 2026-01-01T00:00:00Z
strategy = "{strategy}"
archive = "{archive}"
"""


def start_over(conn: sa.Connection) -> None:
    """Drop every `readings` table (a backup, an archive, a shadow), the ledger and a killed
    rebuild's capture function, before a fresh copy."""
    for name in sa.inspect(conn).get_table_names():
        if name.startswith("readings"):
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}" CASCADE')
    conn.exec_driver_sql("DROP SCHEMA IF EXISTS dbsweep CASCADE")
    conn.exec_driver_sql("DROP FUNCTION IF EXISTS readings__retention_capture()")


def write_policy(folder: Path, name: str, database: str, strategy: str, archive: str = "none") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(POLICY.format(name=name, database=database, strategy=strategy, archive=archive))
    return path


def plan_gate_run(path: Path) -> dict:
    """Plan, gate and run the phase: the seconds of each (the run as its ledger times it), what it
    chose and why, its rows and batches, and the rebuild's count batch (the stage before export)."""
    from expectations.runner import gate

    policy = load_policy(path)
    target = connect(policy)
    began = time.perf_counter()
    plan = service.make_plan(policy, "purge", target)
    planned = time.perf_counter()
    service.record_gate(target, plan, gate(plan))
    gated = time.perf_counter()
    assert plan.gate.passed, plan.gate.summary
    report = service.apply(policy, target, plan, dry_run=False)
    with target.engine.connect() as conn:  # the rebuild's exact count of what the swap removed
        count_ms = conn.execute(sa.text("SELECT duration_ms FROM dbsweep.batches WHERE run_id = :r "
                                        "AND cursor LIKE '%\"stage\": \"export\"%' ORDER BY batch_no LIMIT 1"),
                                {"r": report.run_id}).scalar()
    target.engine.dispose()
    return {"walk": plan.steps[-1].walk, "why": plan.profile[0].get("why", ""), "rows": report.rows,
            "plan_s": planned - began, "gate_s": gated - planned, "run_s": report.seconds,
            "count_s": (count_ms or 0) / 1000, "batches": report.batches}
