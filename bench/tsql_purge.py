"""A retention purge on a T-SQL engine: dbsweep vs one plain DELETE vs the DELETE TOP (n) loop by hand.

    DBSWEEP_MSSQL_URL=mssql+pymssql://user:pw@host:port/master python bench/tsql_purge.py [--rows 200000]
        [--batch-size 5000] [--repeat 3]

Run against Babelfish (what .ci/run starts) this is a ratio of dbsweep's overhead over the same
statements, not a claim about SQL Server's speed. Each method gets a fresh copy of one generated
table (ids uncorrelated with time, about half the rows older than the 7-day cutoff):

- plain: one `DELETE ... WHERE [Logged At] < cutoff`, one transaction;
- by hand: `DELETE TOP (n) ... WHERE [Logged At] < cutoff` committed until it deletes nothing
  (what an operator's script does; it keeps no cursor, so it cannot resume where it stopped);
- dbsweep: its run as the ledger records it (key windows found first, `DELETE TOP (n)` inside each
  window, a ledger row per batch, the phase lock, the sizing), not the plan or the gate.
"""

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
from dbsweep.dialects.mssql import create_engine  # noqa: E402
from dbsweep.ledger import Ledger  # noqa: E402
from dbsweep.policy import load_policy  # noqa: E402
from dbsweep.target import connect, parse_url  # noqa: E402

DATABASE = "dbsweep_bench"
TABLE = "[dbo].[Order Events]"
POLICY = f"""
[policy]
name = "tsqlbench"
[database]
default_env = "dev"
env.dev = {{ url_env = "DBSWEEP_MSSQL_URL", database = "{DATABASE}" }}
[[phase]]
name = "purge"
kind = "retention"
table = "Order Events"
time_column = "Logged At"
older_than = "7 days"
batch_size = BATCH_SIZE
"""


def fresh_copy(server: sa.Engine, rows: int) -> sa.Engine:
    with server.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {DATABASE}")
        conn.exec_driver_sql(f"CREATE DATABASE {DATABASE}")
    engine = create_engine(server.url.set(database=DATABASE))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {TABLE} ([Event Id] bigint NOT NULL PRIMARY KEY, [Payload] nvarchar(40), "
                             "[Logged At] datetime2 NOT NULL)")
        conn.exec_driver_sql(f"CREATE INDEX [Order Events by time] ON {TABLE} ([Logged At])")
        conn.execute(sa.text(f"""
            INSERT INTO {TABLE} ([Event Id], [Payload], [Logged At])
            SELECT k, CONCAT('p', k), DATEADD(second, -CAST(k * 2654435761 % 1209600 AS int), SYSUTCDATETIME())
            FROM (SELECT TOP (:n) CAST(ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) AS bigint) AS k
                  FROM sys.all_columns a CROSS JOIN sys.all_columns b CROSS JOIN sys.all_columns c) AS numbers"""),
                     {"n": rows})
    return engine


def plain(engine: sa.Engine, batch_size: int) -> float:
    began = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM {TABLE} WHERE [Logged At] < DATEADD(day, -7, SYSUTCDATETIME())")
    return time.perf_counter() - began


def by_hand(engine: sa.Engine, batch_size: int) -> float:
    began = time.perf_counter()
    with engine.connect() as conn:
        cutoff = conn.execute(sa.text("SELECT DATEADD(day, -7, SYSUTCDATETIME())")).scalar()
        conn.commit()
        while True:
            with conn.begin():
                deleted = conn.execute(sa.text(f"DELETE TOP ({batch_size}) FROM {TABLE} WHERE [Logged At] < :c"),
                                       {"c": cutoff}).rowcount
            if deleted == 0:
                return time.perf_counter() - began


def with_dbsweep(engine: sa.Engine, batch_size: int) -> float:
    folder = Path(tempfile.mkdtemp(prefix="dbsweep-tsql-bench-"))
    path = folder / "tsqlbench.toml"
    path.write_text(POLICY.replace("BATCH_SIZE", str(batch_size)))
    os.environ.setdefault("DBSWEEP_HOME", str(folder / "home"))
    policy = load_policy(path)
    target = connect(policy)
    plan = service.make_plan(policy, "purge", target)
    from expectations.runner import gate

    service.record_gate(target, plan, gate(plan))
    report = service.apply(policy, target, plan, dry_run=False)
    run = Ledger(target.engine).run(report.run_id)
    target.engine.dispose()
    return (run.finished_at - run.started_at).total_seconds()


METHODS = {"plain DELETE": plain, "DELETE TOP (n) loop by hand": by_hand, "dbsweep purge": with_dbsweep}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    raw = os.environ.get("DBSWEEP_MSSQL_URL")
    if not raw:
        sys.exit("set DBSWEEP_MSSQL_URL to a SQL Server (or Babelfish) the bench may create a database on")
    server = create_engine(parse_url(raw).set(drivername="mssql+pymssql"), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        version = conn.execute(sa.text("SELECT @@VERSION")).scalar().splitlines()[0]
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    for _ in range(args.repeat):
        for name, method in METHODS.items():
            engine = fresh_copy(server, args.rows)
            with engine.connect() as conn:
                due = conn.execute(sa.text(f"SELECT count(*) FROM {TABLE} WHERE [Logged At] < DATEADD(day, -7, SYSUTCDATETIME())")).scalar()
            times[name].append(method(engine, args.batch_size))
            with engine.connect() as conn:
                left = conn.execute(sa.text(f"SELECT count(*) FROM {TABLE}")).scalar()
            assert left == args.rows - due or abs(left - (args.rows - due)) < args.rows * 0.001, (name, left, due)
            engine.dispose()
    with server.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {DATABASE}")
    medians = {name: statistics.median(t) for name, t in times.items()}
    table = Table(title=f"retention purge of about {args.rows // 2:,} of {args.rows:,} rows, batch {args.batch_size:,}, "
                        f"median of {args.repeat}: {version}")
    for column in ("method", "seconds", "ratio to plain DELETE", "ratio to the loop by hand"):
        table.add_column(column, justify="right" if column != "method" else "left")
    for name, median in medians.items():
        table.add_row(name, f"{median:.2f}", f"{median / medians['plain DELETE']:.2f}×",
                      f"{median / medians['DELETE TOP (n) loop by hand']:.2f}×")
    Console().print(table)


if __name__ == "__main__":
    main()
