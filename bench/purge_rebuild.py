"""A backlog purge: retention by rebuild against one plain DELETE and the same copy-and-swap written
by hand, at 50%, 90% and 99% of the table due, on identical fresh copies of one table.

    python bench/purge_rebuild.py [--rows 10000000] [--shares 0.5,0.9,0.99]

Per share, each method starts from a fresh copy of the same generated readings table (bigint key,
an index on the time, ids in time order as an insert-only table has them), vacuumed and analysed:
- plain: one `DELETE … WHERE created_at < cutoff` (its VACUUM not counted; the space stays);
- by hand: `CREATE TABLE … (LIKE …)`, one `INSERT … SELECT` of the rows that stay in key order, the
  primary key and index built after, the renames under `LOCK TABLE`, then `ANALYZE` (writers wait
  for all of it, and a write made meanwhile is lost: the bound, not something to run in production);
- dbsweep rebuild and dbsweep delete: the phase's run as the ledger times it (plan and gate timed
  apart), with a writer inserting new readings and updating recent ones all along, one transaction
  each under a 1 s lock_timeout: its slowest statement is "writer blocked", and every row it
  committed is counted in the table afterwards.
`auto` is planned at every share and its choice shown against the measured times."""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.retention_phase import plan_gate_run, start_over, write_policy  # noqa: E402
from dbsweep import service  # noqa: E402
from dbsweep.embedded import embedded_url  # noqa: E402
from dbsweep.policy import load_policy  # noqa: E402
from dbsweep.target import connect  # noqa: E402

DATABASE = "dbsweep_bench_rebuild"


def make_template(engine: sa.Engine, rows: int) -> None:
    """Readings from 2025-01-01 on, one a second in key order: the cutoff's share is set per run by
    moving each copy's times, not by generating the table again."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS template")
        conn.exec_driver_sql("CREATE TABLE template (id bigint, device_id int, value double precision, seq int)")
        conn.execute(sa.text("INSERT INTO template SELECT g, g % 5000, (g % 1000) / 10.0, g FROM generate_series(1, :n) g"),
                     {"n": rows})


def fresh(engine: sa.Engine, rows: int, share: float) -> None:
    """A copy of the template whose first `share` of keys are before the cutoff."""
    due = int(rows * share)
    with engine.begin() as conn:
        start_over(conn)
        conn.execute(sa.text(
            "CREATE TABLE readings AS SELECT id, device_id, value, timestamptz '2026-01-01' + "
            "make_interval(secs => seq - :due - 1) AS created_at FROM template"), {"due": due})
        conn.exec_driver_sql("ALTER TABLE readings ADD PRIMARY KEY (id)")
        conn.exec_driver_sql("CREATE INDEX readings_created_at ON readings (created_at)")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE readings")
        conn.exec_driver_sql("CHECKPOINT")


def table_bytes(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT pg_total_relation_size('readings')")).scalar()


class Writer(threading.Thread):
    """New readings and updates of recent ones, one transaction each; what it committed is kept."""

    def __init__(self, engine: sa.Engine, rows: int):
        super().__init__(daemon=True)
        self.engine, self.rows, self.stop = engine, rows, threading.Event()
        self.longest_s, self.inserted, self.errors = 0.0, [], 0

    def run(self):
        n = 0
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SET lock_timeout = '1s'")
            conn.commit()
            while not self.stop.is_set():
                n += 1
                began = time.perf_counter()
                try:
                    if n % 3:
                        new_id = 100_000_000 + n
                        conn.execute(sa.text("INSERT INTO readings VALUES (:i, 1, 1.0, now())"), {"i": new_id})
                    else:
                        conn.execute(sa.text("UPDATE readings SET value = value + 1 WHERE id = :i"),
                                     {"i": self.rows - n % 1000})
                    conn.commit()
                    if n % 3:
                        self.inserted.append(new_id)
                except sa.exc.DBAPIError:
                    conn.rollback()
                    self.errors += 1
                self.longest_s = max(self.longest_s, time.perf_counter() - began)
                time.sleep(0.005)
            conn.exec_driver_sql("RESET lock_timeout")  # the connection goes back to the pool
            conn.commit()

    def lost(self, engine: sa.Engine) -> int:
        with engine.connect() as conn:
            there = conn.execute(sa.text("SELECT count(*) FROM readings WHERE id >= 100000000")).scalar()
        return len(self.inserted) - there


def plain(engine: sa.Engine) -> float:
    began = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM readings WHERE created_at < '2026-01-01'")
    return time.perf_counter() - began


def by_hand(engine: sa.Engine) -> float:
    began = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE readings_new (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        conn.exec_driver_sql("INSERT INTO readings_new SELECT * FROM readings WHERE created_at >= '2026-01-01' "
                             "OR created_at IS NULL ORDER BY id")
        conn.exec_driver_sql("ALTER TABLE readings_new ADD PRIMARY KEY (id)")
        conn.exec_driver_sql("CREATE INDEX readings_new_created_at ON readings_new (created_at)")
        conn.exec_driver_sql("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        conn.exec_driver_sql("ALTER TABLE readings RENAME TO readings_old")
        conn.exec_driver_sql("ALTER TABLE readings_new RENAME TO readings")
        conn.exec_driver_sql("DROP TABLE readings_old")
        conn.exec_driver_sql("ANALYZE readings")
    return time.perf_counter() - began


def auto_choice(folder: Path) -> tuple[str, str]:
    policy = load_policy(write_policy(folder, "bench_rebuild", DATABASE, "auto"))
    target = connect(policy)
    plan = service.make_plan(policy, "purge", target)
    target.engine.dispose()
    return plan.steps[-1].walk, plan.profile[0]["why"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--shares", default="0.5,0.9,0.99")
    args = parser.parse_args()
    engine = sa.create_engine(embedded_url(DATABASE))
    folder = Path(tempfile.mkdtemp())
    out = Console(width=220)
    make_template(engine, args.rows)
    result = Table(title=f"retention of a {args.rows:,}-row table, by share due (one run; dbsweep with a writer)")
    for name in ("due", "method", "run s", "to plain", "to by hand", "of it, counting", "plan s", "gate s", "batches",
                 "writer blocked", "writer rows lost", "bytes before", "bytes after", "after / kept share"):
        result.add_column(name, justify="left" if name in ("due", "method") else "right")
    notes = []
    for share in (float(s) for s in args.shares.split(",")):
        times = {}
        for method in ("plain", "by hand", "dbsweep rebuild", "dbsweep delete"):
            fresh(engine, args.rows, share)
            before = table_bytes(engine)
            if method == "plain":
                auto = auto_choice(folder)
                notes.append(f"{share:.0%} due: auto chose {auto[0]} ({auto[1]})")
            found, writer = {}, None
            if method.startswith("dbsweep"):
                writer = Writer(engine, args.rows)
                writer.start()
                found = plan_gate_run(write_policy(folder, "bench_rebuild", DATABASE, method.split()[1]))
                writer.stop.set()
                writer.join()
                seconds = found["run_s"]
            else:
                seconds = plain(engine) if method == "plain" else by_hand(engine)
            times[method] = seconds
            after = table_bytes(engine)
            kept_share = 1 - share
            result.add_row(
                f"{share:.0%}", method, f"{seconds:.2f}", f"{times['plain'] / seconds:.2f}x",
                f"{times['by hand'] / seconds:.2f}x" if "by hand" in times else "",
                f"{found['count_s']:.2f}" if found.get("count_s") else "",
                f"{found['plan_s']:.2f}" if found else "", f"{found['gate_s']:.2f}" if found else "",
                str(found.get("batches", "")), f"{writer.longest_s * 1000:.0f} ms" if writer else "",
                f"{writer.lost(engine)} of {len(writer.inserted)}" if writer else "",
                f"{before / 1e6:.0f} MB", f"{after / 1e6:.0f} MB", f"{after / (before * kept_share):.2f}" if kept_share else "")
            out.print(f"{share:.0%} {method}: {seconds:.2f} s", soft_wrap=True)
    out.print(result)
    for note in notes:
        out.print(note, soft_wrap=True)
    out.print("run s: the run alone (dbsweep: as its ledger times it); 'to plain' and 'to by hand' are how many times "
              "faster than that method the row's method ran; 'of it, counting': the rebuild's count stage (the new table's "
              "ANALYZE; the removed rows were counted during the copy, unless that count was lost to a restart); the plain "
              "DELETE's VACUUM is not counted", soft_wrap=True)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS template")
    engine.dispose()


if __name__ == "__main__":
    main()
