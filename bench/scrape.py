"""What one Prometheus scrape of `dbsweep metrics` costs as the table grows, beside what the
exporter used to do per scrape (an exact count of the table and of the rows due).

    python bench/scrape.py [--rows 1000000 5000000] [--scrapes 20]

Each size gets a fresh table (an index on the time column, half the rows older than the 7-day
cutoff), a `dbsweep check` (the consistency check counts the rows due once and records them), then
`--scrapes` scrapes of the collector with no reuse between them (every scrape reads the database),
and the two exact counts the old exporter ran, timed the same way. Medians in milliseconds."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dbsweep import service  # noqa: E402
from dbsweep.metrics import DbsweepCollector  # noqa: E402
from dbsweep.policy import load_policy  # noqa: E402
from dbsweep.target import connect  # noqa: E402

POLICY = """
[policy]
name = "scrapebench"
[database]
default_env = "dev"
database_name = "dbsweep_scrape_bench"
env.dev = { url = "embedded" }
[[phase]]
name = "events"
kind = "retention"
table = "events"
time_column = "created_at"
older_than = "7 days"
"""


def load(engine: sa.Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS events")
        conn.exec_driver_sql("CREATE TABLE events (id bigint PRIMARY KEY, payload text, created_at timestamptz NOT NULL)")
        conn.execute(sa.text("""INSERT INTO events SELECT g, 'p' || g,
                                now() - make_interval(secs => mod(hashtext(g::text)::bigint & 2147483647, 14 * 86400))
                                FROM generate_series(1, :n) g"""), {"n": rows})
        conn.exec_driver_sql("CREATE INDEX ON events (created_at)")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE events")


def timed(action, times: int) -> float:
    seconds = []
    for _ in range(times):
        began = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("DBSWEEP_HOME", tempfile.mkdtemp(prefix="dbsweep-scrape-bench-"))
    from expectations.runner import gate

    folder = Path(tempfile.mkdtemp())
    path = folder / "scrapebench.toml"
    path.write_text(POLICY)
    policy = load_policy(path)
    target = connect(policy)
    table = Table(title=f"one scrape, median of {args.scrapes} (ms)")
    for name in ("rows", "scrape (dbsweep)", "old: count(*) of the table", "old: count of rows due", "old, both"):
        table.add_column(name, justify="right")
    for rows in args.rows:
        load(target.engine, rows)
        plan = service.make_plan(policy, "events", target)  # what `dbsweep check` records
        service.record_gate(target, plan, gate(plan))
        collector = DbsweepCollector(policy, target, fresh_s=0)
        list(collector.collect())  # warm: reflection caches, the connection pool
        scrape = timed(lambda: list(collector.collect()), args.scrapes)
        with target.engine.connect() as conn:
            whole = timed(lambda: conn.exec_driver_sql("SELECT count(*) FROM events").scalar(), args.scrapes)
            due = timed(lambda: conn.exec_driver_sql(
                "SELECT count(*) FROM events WHERE created_at < now() - interval '7 days'").scalar(), args.scrapes)
        table.add_row(f"{rows:,}", f"{scrape:.1f}", f"{whole:.1f}", f"{due:.1f}", f"{whole + due:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
