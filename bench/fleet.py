"""A fleet of databases purged through the CLI: `--all-targets` at --parallel 1, 2 and 4, against
the sum of the same ten runs made one at a time (`--target`).

    python bench/fleet.py [--databases 10] [--rows 1000000]

Each database gets a fresh events table of --rows rows, half of them older than the 7-day cutoff,
before every method. Every run is a `dbsweep run` process (plan, gate, run), as an operator would
type it. On a 2-core machine the gain stops at 2: each purge is WAL writing and CPU in its server
process, and two of them already keep both cores busy."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dbsweep.embedded import embedded_url, recreate_embedded_database  # noqa: E402

PREFIX = "fleet_bench_"
PHASE = """
[[phase]]
name = "events"
kind = "retention"
table = "events"
time_column = "created_at"
older_than = "7 days"
"""
POLICY = """
[policy]
name = "fleet_bench"
[database]
default_env = "dev"
env.dev = {{ url = "embedded", databases_like = "{pattern}" }}
""" + PHASE


def fresh(databases: int, rows: int) -> list[str]:
    names = []
    for i in range(1, databases + 1):
        name = f"{PREFIX}{i:02d}"
        recreate_embedded_database(name)
        engine = sa.create_engine(embedded_url(name))
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE events (id bigint PRIMARY KEY, payload text, created_at timestamptz NOT NULL)")
            conn.execute(sa.text("""
                INSERT INTO events SELECT g, 'event ' || g,
                       now() - make_interval(secs => (hashtext(g::text) & 1048575) * 1.2)
                FROM generate_series(1, :n) g"""), {"n": rows})
            conn.exec_driver_sql("CREATE INDEX ON events (created_at)")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE events")
        engine.dispose()
        names.append(name)
    with sa.create_engine(embedded_url("postgres"), isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql("CHECKPOINT")
    return names


def cli(*args: str) -> float:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dbsweep.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env=os.environ.copy())
    if done.returncode != 0:
        raise SystemExit(f"dbsweep {' '.join(args)} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    out = Console(width=160)
    folder = Path(tempfile.mkdtemp())
    path = folder / "fleet_bench.toml"
    path.write_text(POLICY.format(pattern=PREFIX.replace("_", "\\\\_") + "%"))
    out.print(f"{args.databases} databases of {args.rows:,} rows ...")
    names = fresh(args.databases, args.rows)
    singles = [cli("run", str(path), "--target", name) for name in names]
    total = sum(singles)
    table = Table(title=f"{args.databases} databases x {args.rows:,} rows, half purged, one run each")
    for column in ("method", "wall seconds", "ratio to the sum of single runs"):
        table.add_column(column, justify="left" if column == "method" else "right")
    table.add_row(f"{args.databases} single runs (--target), one after another: their sum", f"{total:.1f}", "1.00")
    for parallel in (1, 2, 4):
        fresh(args.databases, args.rows)
        wall = cli("run", str(path), "--all-targets", "--parallel", str(parallel))
        table.add_row(f"--all-targets --parallel {parallel}", f"{wall:.1f}", f"{wall / total:.2f}")
    out.print(table)


if __name__ == "__main__":
    main()
