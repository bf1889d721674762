"""Dedupe at seed 003's duplication ratios: dbsweep (strategy auto, an ETL writer running) against
the seed's own offline method and a plain in-place DELETE … USING, on identical fresh tables.

    python bench/dedupe.py [--rows 3000000]

Per ratio (909x, 27x, about 1x) one table of `--rows` rows is generated the same way for each
method. Timed:
- seed: in one transaction holding an EXCLUSIVE lock (the ETL is off for the seed, so writers
  wait): backup copy, CREATE TABLE … AS SELECT DISTINCT ON (key) … ORDER BY key, time, id, swap,
  primary key and UNIQUE constraint; then VACUUM FULL.
- plain: one DELETE … USING (row_number() over the key) of every duplicate; no constraint, and
  the space stays in the table.
- dbsweep: plan, gate and run of a dedupe phase (the run as the ledger records it, every stage:
  helper index, copy or delete, replay, swap, constraint).
A writer inserts duplicates of existing keys and new keys, one transaction each, during every
method; "writer blocked" is its slowest single statement. Bytes are the table's (heap, indexes,
TOAST) after each method."""

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

from dbsweep import service  # noqa: E402
from dbsweep.embedded import embedded_url  # noqa: E402
from dbsweep.policy import load_policy  # noqa: E402
from dbsweep.target import connect  # noqa: E402
from expectations.runner import gate  # noqa: E402

RATIOS = {"909x": 909, "27x": 27, "1x": 1.001}
POLICY = """
[policy]
name = "bench_dedupe"
[database]
default_env = "dev"
database_name = "dbsweep_bench_dedupe"
env.dev = { url = "embedded" }
[[phase]]
name = "dedupe"
kind = "dedupe"
[[phase.tables]]
table = "items"
natural_key = ["task_pk", "requirement_id"]
time_column = "created_at"
"""


def fresh(engine: sa.Engine, rows: int, ratio: float) -> None:
    keys = max(1, int(rows / ratio))
    with engine.begin() as conn:
        for name in sa.inspect(conn).get_table_names():
            if name.startswith("items"):
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}" CASCADE')
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS dbsweep CASCADE")
        conn.exec_driver_sql("CREATE TABLE items (id bigserial PRIMARY KEY, task_pk int NOT NULL, "
                             "requirement_id text NOT NULL, details text, created_at timestamptz NOT NULL)")
        conn.execute(sa.text("""
            INSERT INTO items (task_pk, requirement_id, details, created_at)
            SELECT mod(g, :keys) / 5, 'req-' || mod(g, :keys), 'etl run ' || (g / :keys) || repeat('x', 40),
                   timestamptz '2025-06-01' + make_interval(secs => (hashtext(g::text) & 1048575))
            FROM generate_series(0, :rows - 1) g"""), {"rows": rows, "keys": keys})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE items")
        conn.exec_driver_sql("CHECKPOINT")


def table_bytes(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT pg_total_relation_size('items')")).scalar()


class Writer(threading.Thread):
    def __init__(self, engine: sa.Engine, keys: int):
        super().__init__(daemon=True)
        self.engine, self.keys, self.stop = engine, keys, threading.Event()
        self.longest_s, self.commits, self.errors = 0.0, 0, 0

    def run(self):
        n = 0
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                n += 1
                key = n % self.keys if n % 2 else 10_000_000 + n  # a duplicate, or a new key
                began = time.perf_counter()
                try:
                    conn.execute(sa.text("INSERT INTO items (task_pk, requirement_id, created_at) "
                                         "VALUES (:t, :r, now())"), {"t": key // 5, "r": f"req-{key}"})
                    conn.commit()
                    self.commits += 1
                except sa.exc.DBAPIError:
                    conn.rollback()
                    self.errors += 1
                self.longest_s = max(self.longest_s, time.perf_counter() - began)
                time.sleep(0.005)


def timed(engine: sa.Engine, keys: int, work) -> tuple[float, float, int]:
    writer = Writer(engine, keys)
    writer.start()
    time.sleep(0.2)
    began = time.perf_counter()
    work()
    seconds = time.perf_counter() - began
    writer.stop.set()
    writer.join()
    return seconds, writer.longest_s, writer.errors


def seed_method(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("LOCK TABLE items IN EXCLUSIVE MODE")  # the ETL is stopped for it
        conn.exec_driver_sql("CREATE TABLE items_backup AS SELECT * FROM items")
        conn.exec_driver_sql("CREATE TABLE items_new AS SELECT DISTINCT ON (task_pk, requirement_id) * FROM items "
                             "ORDER BY task_pk, requirement_id, created_at, id")
        conn.exec_driver_sql("ALTER TABLE items RENAME TO items_old")
        conn.exec_driver_sql("ALTER TABLE items_new RENAME TO items")
        conn.exec_driver_sql("ALTER TABLE items ADD PRIMARY KEY (id)")
        conn.exec_driver_sql("ALTER TABLE items ADD CONSTRAINT items_key UNIQUE (task_pk, requirement_id)")
        conn.exec_driver_sql("ALTER SEQUENCE items_id_seq OWNED BY items.id")
        conn.exec_driver_sql("ALTER TABLE items ALTER COLUMN id SET DEFAULT nextval('items_id_seq')")
        conn.exec_driver_sql("DROP TABLE items_old")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM FULL items")


def plain_method(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("""
            DELETE FROM items USING (SELECT id, row_number() OVER (PARTITION BY task_pk, requirement_id
                                                                  ORDER BY created_at, id) AS n FROM items) d
            WHERE items.id = d.id AND d.n > 1""")


def dbsweep_method(policy_path: Path, found: dict) -> None:
    policy = load_policy(policy_path)
    target = connect(policy)
    plan = service.make_plan(policy, "dedupe", target)
    service.record_gate(target, plan, gate(plan))
    assert plan.gate.passed, plan.gate.summary
    print(f"  dbsweep chose {plan.steps[0].walk}: {plan.profile[0]['why']}")
    report = service.apply(policy, target, plan, dry_run=False)
    found.update(strategy=plan.steps[0].walk, rows=report.rows, run_s=report.seconds,
                 longest_batch_ms=report.batch_ms["max"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=3_000_000)
    args = parser.parse_args()
    engine = sa.create_engine(embedded_url("dbsweep_bench_dedupe"))
    folder = Path(tempfile.mkdtemp())
    policy_path = folder / "bench_dedupe.toml"
    policy_path.write_text(POLICY)
    out = Console(width=200)
    result = Table(title=f"dedupe, {args.rows:,} rows per table, a writer inserting all along")
    for name in ("ratio", "method", "seconds", "to seed", "to plain", "dbsweep run alone", "run to seed",
                 "writer blocked", "bytes before", "bytes after"):
        result.add_column(name, justify="left" if name in ("ratio", "method") else "right")
    notes = []
    for label, ratio in RATIOS.items():
        keys = max(1, int(args.rows / ratio))
        times = {}
        for method in ("seed", "plain", "dbsweep"):
            fresh(engine, args.rows, ratio)
            before = table_bytes(engine)
            found: dict = {}
            work = {"seed": lambda: seed_method(engine), "plain": lambda: plain_method(engine),
                    "dbsweep": lambda: dbsweep_method(policy_path, found)}[method]
            seconds, blocked, errors = timed(engine, keys, work)
            times[method] = seconds
            run_alone = found.get("run_s")
            if method == "dbsweep":
                notes.append(f"{label}: dbsweep chose {found['strategy']}; longest batch {found['longest_batch_ms']:.0f} ms "
                             "(DDL stages included); "
                             f"{errors} writer inserts refused as duplicates (the constraint, or its guard)")
            result.add_row(label, method, f"{seconds:.2f}", f"{seconds / times['seed']:.2f}",
                           f"{seconds / times['plain']:.2f}" if "plain" in times else "",
                           f"{run_alone:.2f}" if run_alone else "", f"{run_alone / times['seed']:.2f}" if run_alone else "",
                           f"{blocked * 1000:.0f} ms", f"{before / 1e6:.1f} MB", f"{table_bytes(engine) / 1e6:.1f} MB")
            out.print(f"{label} {method}: {seconds:.2f} s, writer blocked {blocked * 1000:.0f} ms")
    out.print(result)
    for note in notes:
        out.print(note)
    out.print("seconds: plan (profile), gate (Great Expectations) and run for dbsweep; plain keeps no constraint and "
              "its space stays in the table")
    engine.dispose()


if __name__ == "__main__":
    main()
