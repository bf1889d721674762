"""Discovery's cost on a database of 10M rows: the seeds' demo tables at scale, next to one table of
10M readings, timed per table, against one plain `count(*)` of the big table (the full scan
discovery never does).

    python bench/discover.py [--rows 10000000] [--scale 1]"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dbsweep.demo import breezeway, nes  # noqa: E402
from dbsweep.discover import discover  # noqa: E402
from dbsweep.embedded import embedded_url, recreate_embedded_database  # noqa: E402

DATABASE = "dbsweep_bench_discover"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    recreate_embedded_database(DATABASE)
    engine = sa.create_engine(embedded_url(DATABASE))
    nes.create(engine, args.scale)
    breezeway.create(engine, args.scale)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE big_readings (id bigint PRIMARY KEY, meter_id int, read_at timestamptz NOT NULL)"))
        conn.execute(sa.text("INSERT INTO big_readings SELECT g, mod(g, 5000), now() - make_interval(secs => g * 8) "
                             "FROM generate_series(1, :n) g"), {"n": args.rows})
        conn.execute(sa.text("CREATE INDEX ON big_readings (read_at)"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
        began = time.perf_counter()
        conn.exec_driver_sql("SELECT count(*) FROM big_readings")
        scan_s = time.perf_counter() - began
        total = conn.execute(sa.text("SELECT sum(n_live_tup) FROM pg_stat_user_tables")).scalar()
    found = discover(engine)
    out = Console(width=200)
    table = Table(title=f"discover on {total:,} rows in {found.tables} tables: {found.seconds:.2f} s in all")
    for name in ("table", "seconds", "proposals"):
        table.add_column(name, justify="left" if name != "seconds" else "right")
    for name, seconds in sorted(found.per_table_s.items(), key=lambda item: -item[1]):
        kinds = ", ".join(f"{p.kind} ({p.sure})" for p in found.proposals if p.table == name)
        table.add_row(name, f"{seconds:.3f}", kinds)
    out.print(table)
    out.print(f"one count(*) of big_readings alone (the scan discovery does not do): {scan_s:.2f} s")
    engine.dispose()
    recreate_embedded_database(DATABASE)


if __name__ == "__main__":
    main()
