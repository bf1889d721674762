"""The NES cascades (seed 000: community and tenant phases) against one set of plain DELETE statements on the same data.

    python bench/cascade.py [--scale 10] [--times 10]

Each method gets the NES demo dataset freshly generated with the same scale (the generator is
deterministic). The plain set is what a DBA would type: one DELETE per child table (children of
the selected tenants), then one for the tenants. dbsweep runs the policy's phase with the seed's
per-table batch sizes (contact 100, address 500, phone/email 1000, note 2000), and again with
every batch size multiplied by --times. The same cascade written by hand (100 and 100 x --times
parents per transaction, children in one statement, no per-table limits, no guard, no ledger) is
the bound a batched cascade can approach. Ratios are what to compare: absolute times vary from run to run."""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dbsweep import service  # noqa: E402
from dbsweep.demo import nes  # noqa: E402
from dbsweep.policy import load_policy  # noqa: E402
from dbsweep.target import connect  # noqa: E402

PHASES = {"community": (49, "(contact_type = 'Closed' OR left(name, 2) = 'ZY')"), "tenant": (94, "true")}
DOOMED = """SELECT id FROM contacts c WHERE object_type_id = {type_id} AND {where}
    AND (updated_at IS NULL OR updated_at < now() - interval '7 years')
    AND (last_login_at IS NULL OR last_login_at < now() - interval '7 years')
    AND NOT EXISTS (SELECT 1 FROM contact_activity a WHERE a.contact_id = c.id AND a.occurred_at >= now() - interval '7 years')"""
CHILD_LINKS = [(t, "object_type_id = {type_id} AND object_id") for t in ("addresses", "phones", "emails", "notes")] + [
    (t, "contact_id") for t in ("contact_tags", "contact_activity")]
PLAIN = [f"DELETE FROM {t} WHERE {link} IN (SELECT id FROM doomed)" for t, link in CHILD_LINKS] + [
    "DELETE FROM contacts WHERE id IN (SELECT id FROM doomed)"]


def fresh(engine: sa.Engine, scale: float) -> None:
    nes.create(engine, scale)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("CHECKPOINT")


def plain(engine: sa.Engine, scale: float, phase: str) -> tuple[int, float]:
    fresh(engine, scale)
    type_id, where = PHASES[phase]
    began = time.perf_counter()
    rows = 0
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TEMP TABLE doomed ON COMMIT DROP AS {DOOMED.format(type_id=type_id, where=where)}")
        for statement in PLAIN:
            rows += conn.exec_driver_sql(statement.format(type_id=type_id)).rowcount
    return rows, time.perf_counter() - began


def by_hand(engine: sa.Engine, scale: float, phase: str, parents: int, guarded: bool = False) -> tuple[int, float, int]:
    """The bound a batched cascade can approach: per transaction, `parents` selected parents in
    key order, all their children in one statement (no per-table limits), then the parents, with
    the rule checked again but no guard against children added meanwhile, no ledger, no lock.
    `guarded`: the parent DELETE also checks, as dbsweep's does, that no child row points at the
    parent any more (NOT EXISTS per child table): a child added after its table was done keeps
    its parent instead of being orphaned (the NES links are polymorphic, no foreign key)."""
    fresh(engine, scale)
    type_id, where = PHASES[phase]
    doomed = DOOMED.format(type_id=type_id, where=where)
    children = ",\n".join(f"d{i} AS (DELETE FROM {t} WHERE {link.format(type_id=type_id)} IN (SELECT id FROM batch) "
                          "RETURNING 1)" for i, (t, link) in enumerate(CHILD_LINKS))
    counted = " + ".join(f"(SELECT count(*) FROM d{i})" for i in range(len(CHILD_LINKS)))
    guard = "".join(f" AND NOT EXISTS (SELECT 1 FROM {t} x WHERE {_pointing_at_c(link.format(type_id=type_id))})"
                    for t, link in CHILD_LINKS) if guarded else ""
    raw = engine.raw_connection()
    try:
        cursor, rows, transactions, after = raw.cursor(), 0, 0, 0
        began = time.perf_counter()
        while True:
            cursor.execute(f"WITH batch AS ({doomed} AND id > %s ORDER BY id LIMIT {parents}),\n{children}\n"
                           f"SELECT {counted}, (SELECT max(id) FROM batch)", (after,))
            deleted, last = cursor.fetchone()
            if last is None:
                raw.commit()
                break
            cursor.execute(f"DELETE FROM contacts c WHERE id IN ({doomed} AND id > %s AND id <= %s){guard}", (after, last))
            rows, after, transactions = rows + deleted + cursor.rowcount, last, transactions + 1
            raw.commit()
        return rows, time.perf_counter() - began, transactions
    finally:
        raw.close()


def _pointing_at_c(link: str) -> str:
    """A child link ("object_type_id = 49 AND object_id") as the condition that a child row x
    points at the parent row c."""
    *fixed, pointer = [part.strip() for part in link.split(" AND ")]
    return " AND ".join([*(f"x.{part}" for part in fixed), f"x.{pointer} = c.id"])


def swept(engine: sa.Engine, scale: float, policy_path: Path, times: int | None, phase: str):
    """dbsweep's run of the phase: the seed's batch sizes multiplied by `times`, or (None) with
    every batch size taken out: the defaults, parent batches sized to target_batch_ms."""
    from expectations.runner import gate

    fresh(engine, scale)
    text = policy_path.read_text()
    scaled = policy_path.with_name("nes_bench.toml")
    if times is None:
        scaled.write_text(re.sub(r"\nbatch_size = \d+[^\n]*", "", text))
    else:
        scaled.write_text(re.sub(r"batch_size = (\d+)", lambda m: f"batch_size = {int(m.group(1)) * times}", text))
    policy = load_policy(scaled)
    target = connect(policy)
    began = time.perf_counter()
    plan = service.make_plan(policy, phase, target)
    planned = time.perf_counter() - began
    service.record_gate(target, plan, gate(plan))
    report = service.apply(policy, target, plan, dry_run=False)
    return plan, report, planned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--times", type=int, default=10, help="the second dbsweep run multiplies every batch size by this")
    args = parser.parse_args()
    os.environ.setdefault("DBSWEEP_HOME", str(Path(tempfile.gettempdir()) / "dbsweep-bench"))
    console = Console(width=160)
    with tempfile.TemporaryDirectory() as tmp:
        body = (ROOT / "policies" / "nes.toml").read_text().replace('name = "nes"', 'name = "nes_bench"', 1)
        path = Path(tmp) / "seed.toml"
        path.write_text(body.replace('env.dev = { url = "embedded" }', 'env.dev = { url = "embedded", database = "nes_bench" }'))
        (Path(tmp) / "nes_bench.toml").write_text(path.read_text())
        engine = connect(load_policy(Path(tmp) / "nes_bench.toml")).engine
        console.print(f"NES data at scale {args.scale:g}: {nes.counts(args.scale)} contacts per type ...")
        results = Table(title=f"NES cascades over all tables, scale {args.scale:g}, one run each")
        for name in ("phase", "method", "rows", "seconds", "rows/s", "rows/minute", "ratio to plain DELETEs",
                     "transactions", "longest (s)"):
            results.add_column(name, justify="left" if name in ("phase", "method") else "right")
        for phase in PHASES:
            plain_rows, plain_s = plain(engine, args.scale, phase)
            plain_rate = plain_rows / plain_s
            results.add_row(phase, "7 plain DELETE statements, one transaction", f"{plain_rows:,}", f"{plain_s:.2f}",
                            f"{plain_rate:,.0f}", f"{plain_rate * 60:,.0f}", "1.00x", "1", f"{plain_s:.3f}")
            for parents in (100, 100 * args.times):
                rows, seconds, transactions = by_hand(engine, args.scale, phase, parents)
                assert rows == plain_rows, (rows, plain_rows)
                results.add_row(phase, f"by hand, {parents:,} parents per transaction (bound)", f"{rows:,}",
                                f"{seconds:.2f}", f"{rows / seconds:,.0f}", f"{rows / seconds * 60:,.0f}",
                                f"{rows / seconds / plain_rate:.2f}x", f"{transactions:,}", "")
            for label, times in (("dbsweep, the seed's batch sizes", 1), (f"dbsweep, every batch size x{args.times}", args.times),
                                 ("dbsweep, defaults (parents sized to 100 ms)", None)):
                plan, report, planned = swept(engine, args.scale, path, times, phase)
                assert report.rows == plain_rows, (report.rows, plain_rows)
                rate = report.rows / report.seconds
                results.add_row(phase, label, f"{report.rows:,}", f"{report.seconds:.2f}", f"{rate:,.0f}",
                                f"{rate * 60:,.0f}", f"{rate / plain_rate:.2f}x", f"{report.batches:,}",
                                f"{report.batch_ms['max'] / 1000:.3f}")
                if times is None:  # the bound at the same number of transactions
                    per = -(-plan.profile[0]["rows_selected"] // report.batches)
                    rows, seconds, transactions = by_hand(engine, args.scale, phase, per)
                    results.add_row(phase, f"by hand, {per:,} parents per transaction (its bound)", f"{rows:,}",
                                    f"{seconds:.2f}", f"{rows / seconds:,.0f}", f"{rows / seconds * 60:,.0f}",
                                    f"{rows / seconds / plain_rate:.2f}x", f"{transactions:,}", "")
                    results.add_row(phase, "  dbsweep defaults as a share of that bound", "", "", "", "",
                                    f"{rate / (rows / seconds):.2f}", "", "")
                    rows, seconds, transactions = by_hand(engine, args.scale, phase, per, guarded=True)
                    results.add_row(phase, f"same work by hand: {per:,} parents per transaction, dbsweep's guard",
                                    f"{rows:,}", f"{seconds:.2f}", f"{rows / seconds:,.0f}",
                                    f"{rows / seconds * 60:,.0f}", f"{rows / seconds / plain_rate:.2f}x",
                                    f"{transactions:,}", "")
                    results.add_row(phase, "  dbsweep defaults as a share of the same work", "", "", "", "",
                                    f"{rate / (rows / seconds):.2f}", "", "")
        console.print(results)
        console.print("seed 000's target: 10,000 records/minute sustained")


if __name__ == "__main__":
    main()
