"""Batched purge vs one plain DELETE vs the naive ctid loop, on identical copies of the same data.

    python bench/purge.py [--rows 3000000] [--batch-size N] [--naive-batch 10000] [--repeat 3]

The two loops written by hand (one DELETE per key or TID range, committed, nothing else) are
what dbsweep's two walks can approach at best. Each method gets a fresh copy of one generated
table (ids not correlated with time, about half the rows older than the 7-day cutoff), checkpointed before timing. Ratios are what to compare:
absolute times vary from run to run on shared machines. "ratio to plain DELETE" divides the
medians over the rounds; "same, median of rounds" is the median of each round's own ratio, which
pairs methods timed minutes apart rather than across the whole run. dbsweep's time is its run's
as the ledger records it (from the run's start to its finish, table reflection and every batch
included), not the plan, the gate, or the checks that come before a run."""

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
from dbsweep.policy import load_policy  # noqa: E402
from dbsweep.target import connect  # noqa: E402

POLICY = """
[policy]
name = "bench"
[database]
default_env = "dev"
database_name = "dbsweep_bench"
env.dev = {{ url = "embedded" }}
[[phase]]
name = "{table}"
kind = "retention"
table = "{table}"
time_column = "created_at"
older_than = "7 days"
{sizing}
{walk}
"""


def build_template(engine: sa.Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS template")
        conn.exec_driver_sql("CREATE UNLOGGED TABLE template (id bigint, event_id uuid, client_id int, created_at timestamptz)")
        conn.execute(sa.text("""
            INSERT INTO template SELECT g, md5(g::text)::uuid, mod(g::bigint * 7919, 5000)::int,
                   now() - make_interval(secs => mod(hashtext(g::text)::bigint & 2147483647, 14 * 86400))
            FROM generate_series(1, :n) g"""), {"n": rows})


def fresh_copy(engine: sa.Engine, name: str) -> None:
    """A new copy named `name`; earlier copies are dropped first, so no method runs beside
    autovacuum cleaning up after the one before it."""
    with engine.begin() as conn:
        earlier = conn.exec_driver_sql("SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
                                       "AND tablename <> 'template'").scalars().all()
        for table in earlier:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        conn.exec_driver_sql(f"CREATE TABLE {name} AS SELECT * FROM template ORDER BY id")
        conn.exec_driver_sql(f"ALTER TABLE {name} ADD PRIMARY KEY (id)")
        conn.exec_driver_sql(f"CREATE INDEX ON {name} (created_at)")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"VACUUM ANALYZE {name}")
        conn.exec_driver_sql("CHECKPOINT")


def plain_delete(engine: sa.Engine, cutoff) -> tuple[int, float, float]:
    fresh_copy(engine, "plain")
    began = time.perf_counter()
    with engine.begin() as conn:
        rows = conn.execute(sa.text("DELETE FROM plain WHERE created_at < :c"), {"c": cutoff}).rowcount
    seconds = time.perf_counter() - began
    return rows, seconds, seconds


def naive_loop(engine: sa.Engine, cutoff, batch: int) -> tuple[int, float, float]:
    """The seed's 'future enhancement': DELETE ... WHERE ctid IN (SELECT ctid ... LIMIT n), repeated."""
    fresh_copy(engine, "naive")
    began, total, longest = time.perf_counter(), 0, 0.0
    while True:
        t0 = time.perf_counter()
        with engine.begin() as conn:
            rows = conn.execute(sa.text(
                "DELETE FROM naive WHERE created_at < :c AND ctid IN "
                "(SELECT ctid FROM naive WHERE created_at < :c LIMIT :n)"), {"c": cutoff, "n": batch}).rowcount
        longest = max(longest, time.perf_counter() - t0)
        total += rows
        if rows == 0:
            break
    return total, time.perf_counter() - began, longest


def hand_loop(engine: sa.Engine, cutoff, walk: str, width: int) -> tuple[int, float, float]:
    """What dbsweep's walks do, written by hand with no ledger, no lock and no sizing: the bound
    dbsweep can approach. walk "key": (id > a AND id <= a + width]; "blocks": TID ranges of
    `width` pages. One transaction per range."""
    fresh_copy(engine, "by_hand")
    with engine.connect() as conn:
        if walk == "key":
            first, last = conn.exec_driver_sql("SELECT min(id), max(id) FROM by_hand").one()
        else:
            first, last = 0, conn.exec_driver_sql("SELECT pg_relation_size('by_hand') / 8192").scalar()
    where = ("id > %(a)s AND id <= %(b)s" if walk == "key"
             else "ctid >= format('(%%s,0)', %(a)s)::tid AND ctid < format('(%%s,0)', %(b)s)::tid")
    raw = engine.raw_connection()
    try:
        cursor, total, longest = raw.cursor(), 0, 0.0
        began = time.perf_counter()
        for start in range(first - 1 if walk == "key" else 0, last + 1, width):
            t0 = time.perf_counter()
            cursor.execute(f"DELETE FROM by_hand WHERE {where} AND created_at < %(c)s",
                           {"a": start, "b": start + width, "c": cutoff})
            total += cursor.rowcount
            raw.commit()
            longest = max(longest, time.perf_counter() - t0)
        return total, time.perf_counter() - began, longest
    finally:
        raw.close()


def dbsweep_purge(engine: sa.Engine, policy_dir: Path, batch: int, now, walk: str) -> tuple[int, float, float]:
    from expectations.runner import gate

    fresh_copy(engine, "swept")
    path = policy_dir / "bench.toml"
    path.write_text(POLICY.format(table="swept", sizing=f"batch_size = {batch}" if batch else "", walk=f'walk = "{walk}"'))
    policy = load_policy(path)
    target = connect(policy)
    plan = service.make_plan(policy, "swept", target, now=now)
    service.record_gate(target, plan, gate(plan))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("CHECKPOINT")
    report = service.apply(policy, target, plan, dry_run=False)
    return report.rows, report.seconds, report.batch_ms["max"] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="a fixed dbsweep batch size; default: the policy defaults (adaptive, 100 ms batches)")
    parser.add_argument("--naive-batch", type=int, default=10_000, help="LIMIT of the naive loop (the seed's 10,000)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds; each method runs once per round, in turn, and its median time is reported")
    args = parser.parse_args()
    os.environ.setdefault("DBSWEEP_HOME", str(Path(tempfile.gettempdir()) / "dbsweep-bench"))
    console = Console(width=190)
    with tempfile.TemporaryDirectory() as tmp:
        policy_dir = Path(tmp)
        (policy_dir / "bench.toml").write_text(POLICY.format(table="template", sizing="", walk=""))
        target = connect(load_policy(policy_dir / "bench.toml"))
        engine = target.engine
        console.print(f"generating {args.rows:,} rows ...")
        build_template(engine, args.rows)
        from datetime import timedelta

        from dbsweep.plan import utcnow

        now = utcnow()
        cutoff = now - timedelta(days=7)
        sizing = f"batch {args.batch_size:,}" if args.batch_size else "adaptive 100 ms batches"
        methods = {
            PLAIN: lambda: plain_delete(engine, cutoff),
            f"dbsweep, walk = \"key\" (default; {sizing})": lambda: dbsweep_purge(engine, policy_dir, args.batch_size,
                                                                                  now, "key"),
            f"dbsweep, walk = \"blocks\" ({sizing})": lambda: dbsweep_purge(engine, policy_dir, args.batch_size,
                                                                            now, "blocks"),
            "by hand, key ranges of 200k ids (key walk's bound)": lambda: hand_loop(engine, cutoff, "key",
                                                                                             200_000),
            "by hand, TID ranges of 3k pages (block walk's bound)": lambda: hand_loop(engine, cutoff, "blocks",
                                                                                               3_000),
            f"naive ctid IN (... LIMIT {args.naive_batch:,}) loop": lambda: naive_loop(engine, cutoff, args.naive_batch),
        }
        runs: dict[str, list] = {name: [] for name in methods}
        for round_no in range(args.repeat):
            for name, method in methods.items():
                runs[name].append(method())
                console.print(f"round {round_no + 1}: {name}: {runs[name][-1][1]:.2f} s")
    results = {name: _median_run(found) for name, found in runs.items()}
    plain_rate = results[PLAIN][0] / results[PLAIN][1]
    paired = {name: statistics.median(plain[1] / mine[1] for plain, mine in zip(runs[PLAIN], found))
              for name, found in runs.items()}
    table = Table(title=f"purge of {args.rows:,} rows (ids uncorrelated with time), one run of the script, "
                        f"median of {args.repeat} rounds")
    for name in ("method", "rows deleted", "seconds", "rows/s", "ratio to plain DELETE",
                 "same, median of rounds", "vs naive loop", "longest batch (s)"):
        table.add_column(name, justify="left" if name == "method" else "right")
    naive = list(results.values())[-1]
    for name, (rows, seconds, longest) in results.items():
        rate = rows / seconds
        table.add_row(name, f"{rows:,}", f"{seconds:.2f}", f"{rate:,.0f}", f"{rate / plain_rate:.2f}x",
                      f"{paired[name]:.2f}x", f"{rate / (naive[0] / naive[1]):.2f}x", f"{longest:.3f}")
    console.print(table)


PLAIN = "plain DELETE (one statement)"


def _median_run(found: list[tuple]) -> tuple[int, float, float]:
    """Rows, the median time, and the longest batch over all rounds."""
    seconds = statistics.median(r[1] for r in found)
    return found[0][0], seconds, max(r[2] for r in found)


if __name__ == "__main__":
    main()
