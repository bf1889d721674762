"""Cost per row as the table grows: a retention purge of half a narrow table at 1M, 4M, 16M and 48M
rows, through every path, against the database's own work at that size.

    python bench/scale.py [--sizes 1,4,16,48] [--paths plain,delete,delete+table,rebuild,rebuild+table]

Per size, one template is generated (ids shuffled against time, as an updated table has them;
half the rows before the cutoff), and each path starts from a fresh copy of it, vacuumed and
analysed. Paths: `plain` is one DELETE (the database's own work at that size); `delete` and
`rebuild` are dbsweep's strategies, with archive none or `+table`. For dbsweep, plan, gate and run
are timed apart (the run as its ledger times it). Reported per path and size: rows per second of
the run, nanoseconds per row, the run's time against the plain DELETE's at the same size (what
dbsweep adds, which should not grow), WAL bytes per row (the database's work that does grow), the
key walk's mean batch and the plan's time per million rows; and the table's size against
shared_buffers, which is where a scan stops being served from PostgreSQL's own cache."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.retention_phase import plan_gate_run, start_over, write_policy  # noqa: E402
from dbsweep.embedded import embedded_url  # noqa: E402

DATABASE = "dbsweep_bench_scale"


def make_template(engine: sa.Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS template")
        conn.execute(sa.text(
            "CREATE TABLE template AS SELECT g AS id, (g % 1000)::int AS value, timestamptz '2026-01-01' + "
            "make_interval(secs => ((hashtext(g::text) & 2147483647) % :n) - :n / 2) AS created_at "
            "FROM generate_series(1, :n) g"), {"n": rows})


def fresh(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        start_over(conn)
        conn.exec_driver_sql("CREATE TABLE readings AS SELECT * FROM template")
        conn.exec_driver_sql("ALTER TABLE readings ADD PRIMARY KEY (id)")
        conn.exec_driver_sql("CREATE INDEX readings_created_at ON readings (created_at)")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE readings")
        conn.exec_driver_sql("CHECKPOINT")


def wal_lsn(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")).scalar()


def plain(engine: sa.Engine) -> dict:
    began = time.perf_counter()
    with engine.begin() as conn:
        rows = len(conn.execute(sa.text("DELETE FROM readings WHERE created_at < '2026-01-01' RETURNING 1")).all())
    return {"run_s": time.perf_counter() - began, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,4,16,48", help="millions of rows")
    parser.add_argument("--paths", default="plain,delete,delete+table,rebuild,rebuild+table")
    args = parser.parse_args()
    engine = sa.create_engine(embedded_url(DATABASE))
    folder = Path(tempfile.mkdtemp())
    out = Console(width=220)
    with engine.connect() as conn:
        shared = conn.execute(sa.text("SELECT pg_size_bytes(current_setting('shared_buffers'))")).scalar()
    result = Table(title=f"retention of half a narrow table, by size (one run each; shared_buffers {shared / 2**20:.0f} MB)")
    for name in ("rows", "table MB", "path", "run s", "rows/s", "ns/row", "to plain", "WAL B/row", "rows/batch",
                 "plan s", "plan s/M rows", "gate s"):
        result.add_column(name, justify="left" if name == "path" else "right")
    for millions in (float(s) for s in args.sizes.split(",")):
        rows = int(millions * 1_000_000)
        make_template(engine, rows)
        plain_s = None
        for path in args.paths.split(","):
            fresh(engine)
            with engine.connect() as conn:
                size = conn.execute(sa.text("SELECT pg_total_relation_size('readings')")).scalar()
            before = wal_lsn(engine)
            strategy, _, archive = path.partition("+")
            found = plain(engine) if path == "plain" else plan_gate_run(
                write_policy(folder, "bench_scale", DATABASE, strategy, archive or "none"))
            wal = wal_lsn(engine) - before
            if path == "plain":
                plain_s = found["run_s"]
            seconds, done = found["run_s"], found["rows"]
            result.add_row(
                f"{rows:,}", f"{size / 2**20:.0f}", path, f"{seconds:.2f}", f"{done / seconds:,.0f}",
                f"{seconds / done * 1e9:,.0f}", f"{seconds / plain_s:.2f}x" if plain_s else "",
                f"{wal / done:,.0f}", f"{done / found['batches']:,.0f}" if found.get("batches") else "",
                f"{found['plan_s']:.2f}" if "plan_s" in found else "",
                f"{found['plan_s'] / millions:.3f}" if "plan_s" in found else "",
                f"{found['gate_s']:.2f}" if "gate_s" in found else "")
            out.print(f"{rows:,} {path}: {seconds:.2f} s for {done:,} rows", soft_wrap=True)
    out.print(result)
    out.print("to plain: the run's time over one plain DELETE of the same rows at the same size (1.00x = the "
              "database's own cost); WAL B/row includes the archive's writes where there is one", soft_wrap=True)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS template")
        for name in sa.inspect(conn).get_table_names():
            if name.startswith("readings"):
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}" CASCADE')
    engine.dispose()


if __name__ == "__main__":
    main()
