"""Undoing a reset against the reset itself: how long `dbsweep restore` takes to put the previous
values back, as a ratio to the run that changed them, at 20k and 200k changed rows, and again
with earlier runs' rows already in `<table>__previous`.

    python bench/reset_restore.py [--rows 20000 200000] [--rounds 3]

Each round resets the table (every row changes) and restores it; the second and later rounds
find the earlier rounds' saved rows in `__previous`, so a restore that scanned them would grow."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dbsweep import service  # noqa: E402
from dbsweep.policy import load_policy  # noqa: E402
from dbsweep.restore import restore_run  # noqa: E402
from dbsweep.target import connect  # noqa: E402

POLICY = """
[policy]
name = "bench_reset"
[database]
default_env = "dev"
database_name = "dbsweep_bench_reset"
env.dev = {{ url = "embedded" }}
[[phase]]
name = "sync"
kind = "reset"
table = "orders_{rows}"
[[phase.rules]]
match = {{ column = "kind", equals = "test" }}
set = {{ sync_state = "PENDING" }}
[[phase.rules]]
match = "otherwise"
set = {{ sync_state = "{state}", action_type = "NONE" }}
"""


def build(engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS orders_{rows}, orders_{rows}__previous")
        conn.exec_driver_sql(f"CREATE TABLE orders_{rows} (id bigint PRIMARY KEY, kind text, sync_state text, "
                             "action_type text, payload text)")
        conn.exec_driver_sql(f"INSERT INTO orders_{rows} SELECT g, CASE WHEN g = 1 THEN 'test' ELSE 'po' END, "
                             f"'NEW', 'INSERT', repeat('x', 80) FROM generate_series(1, {rows}) g")


def one_round(folder: Path, rows: int, state: str) -> tuple[int, float, float]:
    from expectations.runner import gate

    path = folder / "bench_reset.toml"
    path.write_text(POLICY.format(rows=rows, state=state))
    policy = load_policy(path)
    target = connect(policy)
    plan = service.make_plan(policy, "sync", target)
    service.record_gate(target, plan, gate(plan))
    report = service.apply(policy, target, plan, dry_run=False)
    began = time.perf_counter()
    restored = restore_run(target.engine, report.run_id, policy.archive_dir)
    undo_s = time.perf_counter() - began
    assert restored.rows_restored == report.rows, (restored.rows_restored, report.rows)
    return report.rows, report.seconds, undo_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("DBSWEEP_HOME", str(Path(tempfile.gettempdir()) / "dbsweep-bench"))
    console = Console(width=160)
    table = Table(title="reset, then restore of the same run (one run of the script)")
    for name in ("rows changed", "round", "earlier rows in __previous", "reset (s)", "restore (s)",
                 "restore / reset"):
        table.add_column(name, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for rows in args.rows:
            (folder / "bench_reset.toml").write_text(POLICY.format(rows=rows, state="DONE"))
            build(connect(load_policy(folder / "bench_reset.toml")).engine, rows)
            for round_no in range(args.rounds):
                changed, reset_s, undo_s = one_round(folder, rows, f"DONE{round_no}")
                table.add_row(f"{changed:,}", str(round_no + 1), f"{changed * round_no:,}", f"{reset_s:.2f}",
                              f"{undo_s:.2f}", f"{undo_s / reset_s:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
