"""Archived purges, the partition fast path, and a concurrent writer, on the embedded PostgreSQL.

    python bench/archive.py [--rows 3000000] [--repeat 3] [--partition-rows 5000000] [--writer-seconds 3]

1. Archived purge throughput (archive = table, archive = parquet) as a ratio to one plain DELETE
   of the same rows, each on a fresh copy of the same data; and, as the bound an archived purge
   can approach at best, the database's own cost of keeping the rows, written by hand in one
   statement (into a table; streamed to the client as CSV, as the Parquet path does), in as many
   key windows as dbsweep's batches, and as the same work dbsweep's archives do (each archived
   row tagged with its window; one zstd Parquet file per window, fsynced before it commits).
   Each method runs once per round, in turn; medians over --repeat rounds.
2. Time to take a whole expired partition of --partition-rows rows (detach + drop, and
   detach + move to the archive schema).
3. A concurrent writer (single-row INSERT/UPDATE transactions on the purged table, its own
   process and connection): its commit rate during the purge as a fraction of its rate alone,
   at default settings, with sleep_ms between batches, and with the load-driven throttles
   (max_duty, max_waiting_sessions, max_active_sessions); once writing without a pause, once in
   bursts (--burst-s on, --burst-s off), its rate counted while it writes.

Ratios are what to compare: absolute times vary from run to run on shared machines."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from purge import POLICY as PURGE_POLICY  # noqa: E402
from purge import build_template, fresh_copy, plain_delete  # noqa: E402

from dbsweep import service  # noqa: E402
from dbsweep.plan import utcnow  # noqa: E402
from dbsweep.policy import load_policy  # noqa: E402
from dbsweep.target import connect  # noqa: E402

POLICY = PURGE_POLICY.replace('name = "bench"\n', 'name = "bench"\narchive_dir = "{archive_dir}"\n').replace(
    "{sizing}", "{extra}").replace("{walk}", "")


def prepared(engine, policy_dir: Path, table: str, extra: str, now, copy: bool = True):
    """The policy, target and gated plan of a purge of `table`, and a function that runs it."""
    from expectations.runner import gate

    if copy:
        fresh_copy(engine, table)
        with engine.begin() as conn:  # each archived run starts from an empty archive
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}__archive, {table}__archive_batches")
    path = policy_dir / "bench.toml"
    path.write_text(POLICY.format(table=table, extra=extra, archive_dir=policy_dir / "archive"))
    policy = load_policy(path)
    target = connect(policy)
    plan = service.make_plan(policy, table, target, now=now)
    service.record_gate(target, plan, gate(plan))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("CHECKPOINT")
    return plan, lambda: service.apply(policy, target, plan, dry_run=False)


def sweep(engine, policy_dir: Path, table: str, extra: str, now, copy: bool = True):
    plan, run = prepared(engine, policy_dir, table, extra, now, copy)
    return plan, run()


def by_hand(engine, cutoff, into: str, batches: int = 1, archive_dir: Path | None = None) -> tuple[int, float]:
    """The database's own cost of keeping the deleted rows, with no ledger or client work: what an
    archived purge can approach at best. into "table": DELETE … RETURNING feeding an INSERT into
    an archive table with no index; "stream": COPY (DELETE … RETURNING *) TO STDOUT, the rows read
    by the client and thrown away. `batches` > 1: the same in that many key windows of equal
    size, one transaction each, as a batched purge must do it.

    And the same work as dbsweep's archives, by hand, in the same windows: "tagged", each archive
    row also carrying the number of its window (from a row per window in a batch table, in the
    same statement), which an exact restore of one batch or run needs; "parquet", each window's
    rows streamed, parsed by Arrow, written as one zstd Parquet file and fsynced before the
    window's transaction commits (no overlap of encoding with the DELETE)."""
    fresh_copy(engine, "by_hand")
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("CREATE TABLE by_hand__archive AS SELECT *, 0::bigint AS batch FROM by_hand WITH NO DATA"
                       if into == "tagged" else "CREATE TABLE by_hand__archive AS SELECT * FROM by_hand WITH NO DATA")
        cursor.execute("CREATE TABLE by_hand__batches (batch bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                       "run text NOT NULL, window_no int NOT NULL, at timestamptz NOT NULL DEFAULT now(), "
                       "UNIQUE (run, window_no))")
        cursor.execute("SET TIME ZONE 'UTC'")
        cursor.execute("SELECT id FROM by_hand WHERE created_at < %s ORDER BY id", (cutoff,))
        selected = [r[0] for r in cursor.fetchall()]
        raw.commit()
        schema = _arrow_schema(engine, "by_hand") if into == "parquet" else None
        step = -(-len(selected) // batches)
        windows = [(selected[i] - 1, selected[min(i + step, len(selected)) - 1]) for i in range(0, len(selected), step)]
        began, rows = time.perf_counter(), 0
        for number, (low, high) in enumerate(windows):
            where = ("created_at < %s AND id > %s AND id <= %s", (cutoff, low, high)) if batches > 1 else \
                ("created_at < %s", (cutoff,))
            if into == "table":
                cursor.execute(f"WITH gone AS (DELETE FROM by_hand WHERE {where[0]} RETURNING *) "
                               "INSERT INTO by_hand__archive SELECT * FROM gone", where[1])
                rows += cursor.rowcount
            elif into == "tagged":
                cursor.execute("WITH opened AS (INSERT INTO by_hand__batches (run, window_no) VALUES ('r', %s) "
                               f"RETURNING batch), gone AS (DELETE FROM by_hand WHERE {where[0]} RETURNING *) "
                               "INSERT INTO by_hand__archive SELECT gone.*, (SELECT batch FROM opened) FROM gone",
                               (number, *where[1]))
                rows += cursor.rowcount
            elif into == "parquet":
                with cursor.copy(f"COPY (DELETE FROM by_hand WHERE {where[0]} RETURNING *) TO STDOUT (FORMAT csv)",
                                 where[1]) as copy:
                    text = b"".join(bytes(row) for row in copy)
                rows += cursor.rowcount
                _parquet_file(archive_dir / f"window-{number:05d}.parquet", text, schema)
            else:
                with cursor.copy(f"COPY (DELETE FROM by_hand WHERE {where[0]} RETURNING *) TO STDOUT (FORMAT csv)",
                                 where[1]) as copy:
                    for _ in copy:  # the least a client can do with each row (counting lines cost 0.7 s)
                        pass
                rows += cursor.rowcount
            raw.commit()
        return rows, time.perf_counter() - began
    finally:
        raw.close()


def _arrow_schema(engine, table: str):
    """The Arrow types dbsweep's Parquet archive gives the table's columns (the same file, by hand)."""
    from dbsweep.archive import arrow_schema
    from dbsweep.catalog import reflect_table

    with engine.connect() as conn:
        return arrow_schema(reflect_table(conn, table))


def _parquet_file(path: Path, text: bytes, schema) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = pacsv.read_csv(pa.BufferReader(text), read_options=pacsv.ReadOptions(column_names=schema.names),
                          convert_options=pacsv.ConvertOptions(column_types=schema, null_values=[""],
                                                               strings_can_be_null=True))
    with open(path, "wb") as handle:
        pq.write_table(rows, handle, compression="zstd", use_dictionary=False)
        handle.flush()
        os.fsync(handle.fileno())


def partition_drop(engine, policy_dir: Path, rows: int, archive: str, now) -> tuple[float, int, float]:
    """A table with one old partition of `rows` rows and one current one; time to take the old one."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS parted")
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS dbsweep_archive CASCADE")
        conn.exec_driver_sql("CREATE TABLE parted (id bigint, created_at timestamptz NOT NULL, payload text, "
                             "PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)")
        conn.exec_driver_sql("CREATE TABLE parted_old PARTITION OF parted FOR VALUES FROM ('2000-01-01') TO ('2001-01-01')")
        conn.exec_driver_sql("CREATE TABLE parted_new PARTITION OF parted FOR VALUES FROM ('2001-01-01') TO (MAXVALUE)")
        conn.execute(sa.text("""INSERT INTO parted SELECT g, timestamptz '2000-01-01' + make_interval(secs => g),
                                'payload ' || g FROM generate_series(1, :n) g"""), {"n": rows})
        conn.execute(sa.text("INSERT INTO parted SELECT g, now() - make_interval(secs => g), 'new' "
                             "FROM generate_series(1, 100000) g"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE parted")
    plan, report = sweep(engine, policy_dir, "parted", f'archive = "{archive}"', now, copy=False)
    whole = [s for s in plan.steps if s.walk == "partition"]
    assert len(whole) == 1 and report.rows == rows, (whole, report.rows)
    return report.batch_ms["max"] / 1000, report.rows, report.seconds


def writer(url: str, table: str, stop, commits, busy_us, started, first_id: int, on_s: float, off_s: float) -> None:
    """Single-row INSERT/UPDATE transactions as fast as it can; with off_s, in bursts of on_s
    seconds with off_s seconds of nothing between them. Counts its commits and the time spent
    making them (so a bursty writer's rate is its rate while it writes)."""
    engine = sa.create_engine(url)
    rng = random.Random(os.getpid())
    next_id = first_id
    with engine.connect() as conn:
        conn.exec_driver_sql("SET lock_timeout = '2s'")
        conn.commit()
        started.set()
        burst_began = time.perf_counter()
        while not stop.is_set():
            began = time.perf_counter()
            if off_s and began - burst_began >= on_s:
                time.sleep(off_s)
                burst_began = began = time.perf_counter()
            if rng.random() < 0.5:
                next_id += 1
                conn.execute(sa.text(f"INSERT INTO {table} VALUES (:i, gen_random_uuid(), 1, now())"), {"i": next_id})
            else:
                conn.execute(sa.text(f"UPDATE {table} SET client_id = client_id + 1 WHERE id = :i"),
                             {"i": rng.randint(1, 3_000_000)})
            conn.commit()
            with commits.get_lock():
                commits.value += 1
                busy_us.value += int((time.perf_counter() - began) * 1e6)


def writer_rate(url: str, table: str, during, first_id: int, on_s: float = 0, off_s: float = 0) -> tuple[float, object]:
    """Commits per second of writing while `during()` runs (or for `during` seconds when it is a
    number): for a bursty writer, its rate inside its bursts."""
    ctx = mp.get_context("spawn")
    stop, started, commits, busy_us = ctx.Event(), ctx.Event(), ctx.Value("l", 0), ctx.Value("q", 0)
    proc = ctx.Process(target=writer, args=(url, table, stop, commits, busy_us, started, first_id, on_s, off_s))
    proc.start()
    started.wait(60)
    time.sleep(0.5)  # warm up
    before, busy_before = commits.value, busy_us.value
    result = time.sleep(during) if isinstance(during, (int, float)) else during()
    rate = (commits.value - before) / max(1e-6, (busy_us.value - busy_before) / 1e6)
    stop.set()
    proc.join(30)
    return rate, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--partition-rows", type=int, default=5_000_000)
    parser.add_argument("--writer-seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of part 1; each method runs once per round, in turn, and its median time is reported")
    parser.add_argument("--throttle-sleep-ms", type=int, nargs="+", default=[100, 200, 400, 1000])
    parser.add_argument("--max-duty", type=float, nargs="+", default=[0.5, 0.3, 0.2])
    parser.add_argument("--burst-s", type=float, default=0.25, help="the bursty writer's on and off periods")
    parser.add_argument("--writer-only", action="store_true", help="only part 3, the concurrent writer")
    parser.add_argument("--purges-only", action="store_true", help="only part 1, the archived purges")
    args = parser.parse_args()
    os.environ.setdefault("DBSWEEP_HOME", str(Path(tempfile.gettempdir()) / "dbsweep-bench"))
    console = Console(width=160)
    with tempfile.TemporaryDirectory() as tmp:
        policy_dir = Path(tmp)
        (policy_dir / "bench.toml").write_text(POLICY.format(table="template", extra="", archive_dir=tmp))
        target = connect(load_policy(policy_dir / "bench.toml"))
        engine, url = target.engine, target.engine.url.render_as_string(hide_password=False)
        console.print(f"generating {args.rows:,} rows ...")
        build_template(engine, args.rows)
        now = utcnow()
        cutoff = now - timedelta(days=7)

        if not args.writer_only:
            purges_and_partitions(engine, policy_dir, args, console, now, cutoff)
        if not args.purges_only:
            writer_part(engine, url, policy_dir, args, console)


PLAIN = "plain DELETE (one statement, no archive)"
BOUND_TABLE = "by hand: DELETE … RETURNING into a table (bound)"
BOUND_STREAM = "by hand: COPY (DELETE … RETURNING *) to the client (bound)"
WINDOWS_TABLE = "by hand in {n} key windows, one transaction each: into a table"
WINDOWS_STREAM = "by hand in {n} key windows, one transaction each: to the client"
SAME_TABLE = "same work by hand, {n} key windows: into a table, each row tagged with its window"
SAME_PARQUET = "same work by hand, {n} key windows: a zstd Parquet file each, fsynced"


def dbsweep_label(mode: str, walk: str, extra: str = "") -> str:
    return f"dbsweep, archive = {mode}, walk = {walk}{extra}"


TABLE_KEY = dbsweep_label("table", "key")


def purge_methods(engine, policy_dir: Path, now, cutoff) -> dict:
    """Each method of part 1 by its label: a function of the number of key windows the windowed
    by-hand methods use (the others ignore it), returning (rows, seconds, batches, longest batch s)."""
    def plain(windows: int):
        rows, seconds, _ = plain_delete(engine, cutoff)
        return rows, seconds, 1, seconds

    def hand(into: str, windowed: bool = True):
        def run(windows: int):
            windows = windows if windowed else 1
            rows, seconds = by_hand(engine, cutoff, into, windows, policy_dir / "by_hand")
            return rows, seconds, windows, seconds / windows
        return run

    def dbsweep(extra: str):
        def run(windows: int):
            _, report = sweep(engine, policy_dir, "swept", extra, now)
            return report.rows, report.seconds, report.batches, report.batch_ms["max"] / 1000
        return run

    methods = {PLAIN: plain, BOUND_TABLE: hand("table", windowed=False),
               BOUND_STREAM: hand("stream", windowed=False)}
    for walk in ("key", "blocks"):
        for mode in ("none", "table", "parquet"):
            methods[dbsweep_label(mode, walk)] = dbsweep(f'archive = "{mode}"\nwalk = "{walk}"')
    for mode in ("table", "parquet"):  # what the per-batch commit costs: the same with batches 2.5x as long
        methods[dbsweep_label(mode, "key", ", target_batch_ms = 250")] = dbsweep(
            f'archive = "{mode}"\nwalk = "key"\ntarget_batch_ms = 250')
    methods.update({WINDOWS_TABLE: hand("table"), WINDOWS_STREAM: hand("stream"), SAME_TABLE: hand("tagged"),
                    SAME_PARQUET: hand("parquet")})
    return methods


def purges_and_partitions(engine, policy_dir: Path, args, console: Console, now, cutoff) -> None:
    methods = purge_methods(engine, policy_dir, now, cutoff)
    windows = 0  # the by-hand windows: as many as dbsweep's key walk into a table took in round one
    found: dict[str, list[tuple]] = {}
    for round_no in range(args.repeat):
        console.print(f"round {round_no + 1} of {args.repeat} ...")
        for label, run in methods.items():
            outcome = run(windows)
            windows = windows or (outcome[2] if label == TABLE_KEY else 0)
            found.setdefault(label, []).append(outcome)
    median = {label: statistics.median(o[1] for o in runs) for label, runs in found.items()}
    plain_rows = found[PLAIN][0][0]
    plain_rate = plain_rows / median[PLAIN]
    purges = Table(title=f"archived purge of {plain_rows:,} of {args.rows:,} rows, median of {args.repeat} rounds")
    for name in ("method", "rows", "median seconds", "rows/s", "ratio to plain DELETE", "batches", "longest batch (s)"):
        purges.add_column(name, justify="left" if name == "method" else "right")
    for label, runs in found.items():
        rows = runs[0][0]
        purges.add_row(label.replace("{n}", str(windows)), f"{rows:,}", f"{median[label]:.2f}",
                       f"{rows / median[label]:,.0f}", f"{rows / median[label] / plain_rate:.2f}x",
                       "/".join(str(o[2]) for o in runs), f"{max(o[3] for o in runs):.3f}")
    console.print(purges)
    shares = Table(title=f"dbsweep's archived purges as a share of each bound (median time over median time, "
                         f"{args.repeat} rounds)")
    for name in ("dbsweep run", "one statement", f"{windows} windows", "same work by hand"):
        shares.add_column(name, justify="left" if name == "dbsweep run" else "right")
    for mode, bound, batched, same in (("table", BOUND_TABLE, WINDOWS_TABLE, SAME_TABLE),
                                       ("parquet", BOUND_STREAM, WINDOWS_STREAM, SAME_PARQUET)):
        for walk in ("key", "blocks"):
            mine = median[dbsweep_label(mode, walk)]
            shares.add_row(f"archive = {mode}, walk = {walk}", f"{median[bound] / mine:.2f}",
                           f"{median[batched] / mine:.2f}", f"{median[same] / mine:.2f}")
    console.print(shares)

    if args.purges_only:
        return
    console.print(f"building a {args.partition_rows:,}-row partition ...")
    drops = Table(title="taking one whole expired partition")
    for name in ("archive", "partition rows", "detach + drop/move (s)", "whole run (s)"):
        drops.add_column(name, justify="right")
    for mode in ("none", "table"):
        seconds, rows, run_s = partition_drop(engine, policy_dir, args.partition_rows, mode, utcnow())
        drops.add_row(mode, f"{rows:,}", f"{seconds:.3f}", f"{run_s:.2f}")
    console.print(drops)



def writer_part(engine, url: str, policy_dir: Path, args, console: Console) -> None:
    """The writer's share of its solo rate during the purge, for each throttle setting; then the
    fastest purge that keeps the writer at 90% or more, among sleep_ms settings and among the
    load-driven ones. Once with a writer that never stops, once with one that writes in bursts."""
    settings = [("defaults", "")] + [(f"sleep_ms = {ms}", f"sleep_ms = {ms}") for ms in args.throttle_sleep_ms]
    settings += [(f"max_duty = {d:g}", f"max_duty = {d:g}") for d in args.max_duty]
    settings += [("max_waiting_sessions = 0", "max_waiting_sessions = 0"),
                 ("max_active_sessions = 0", "max_active_sessions = 0"),
                 ("max_active_sessions = 0 + max_duty = 0.5", "max_active_sessions = 0\nmax_duty = 0.5"),
                 ("max_active_sessions = 0 + target_batch_ms = 25", "max_active_sessions = 0\ntarget_batch_ms = 25"),
                 ("max_active_sessions = 0 + max_duty = 0.5 + target_batch_ms = 25",
                  "max_active_sessions = 0\nmax_duty = 0.5\ntarget_batch_ms = 25")]
    for title, on_s, off_s in (("a writer that never stops", 0, 0),
                               (f"a writer in bursts ({args.burst_s:g} s on, {args.burst_s:g} s off)", args.burst_s,
                                args.burst_s)):
        writers = Table(title=f"{title}: its commits/s while it writes (single-row INSERT/UPDATE on the purged table)")
        for name in ("setting", "writer alone", "writer during purge", "fraction kept", "purge rows/s",
                     "paused for load"):
            writers.add_column(name, justify="left" if name == "setting" else "right")
        kept = {}
        for label, extra in settings:
            fresh_copy(engine, "swept")
            before, _ = writer_rate(url, "swept", args.writer_seconds, 50_000_000, on_s, off_s)
            _, run = prepared(engine, policy_dir, "swept", extra, utcnow(), copy=False)
            during, report = writer_rate(url, "swept", run, 60_000_000, on_s, off_s)  # the run only, not its plan
            after, _ = writer_rate(url, "swept", args.writer_seconds, 70_000_000, on_s, off_s)
            alone = (before + after) / 2  # the writer's rate drifts; bracket the purge
            writers.add_row(label, f"{alone:,.0f}", f"{during:,.0f}", f"{during / alone:.0%}",
                            f"{report.rows / report.seconds:,.0f}", f"{report.throttled_s:.1f} s")
            kept[label] = (during / alone, report.rows / report.seconds)
        console.print(writers)
        for family, test in (("sleep_ms", lambda name: name.startswith("sleep_ms")),
                             ("load-driven", lambda name: name.startswith("max_"))):
            fit = {k: v for k, v in kept.items() if test(k) and v[0] >= 0.9}
            if fit:
                best = max(fit, key=lambda k: fit[k][1])
                console.print(f"fastest {family} setting keeping the writer at >= 90%: {best} "
                              f"(writer {fit[best][0]:.0%}, purge {fit[best][1]:,.0f} rows/s)")
            else:
                console.print(f"no {family} setting kept the writer at >= 90%")


if __name__ == "__main__":
    main()
