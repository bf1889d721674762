"""Merge at seed 004's shape: dbsweep's journaled, batched merge against the same merge written by
hand as set-based SQL in one transaction with no journal, on identical fresh data.

    python bench/merge.py [--scale 40] [--documents 8]

The data is `dbsweep demo`'s folders database at `--scale` (applications with 2 to 4 root folders,
overlapping child folder names, documents, polymorphic comments), with `--documents` more
documents in every child folder. By hand: map the duplicate roots to the oldest, merge the child
folders that collide under the survivor (their documents re-pointed, colliding names renamed,
their comments re-pointed), re-point the remaining child folders and the roots' comments, delete
the losers: one UPDATE … FROM or DELETE … USING per table and level, one transaction, nothing
journaled (the temporary maps analyzed, so each UPDATE is planned on their real sizes). dbsweep: the policy `policies/folders.toml` minus its constraint, batch size adapted to
100 ms; its time is the run as the ledger records it, its longest transaction the longest batch."""

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

from dbsweep import service  # noqa: E402
from dbsweep.demo import folders  # noqa: E402
from dbsweep.embedded import embedded_url  # noqa: E402
from dbsweep.policy import load_policy  # noqa: E402
from dbsweep.target import connect  # noqa: E402
from expectations.runner import gate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BY_HAND = """
CREATE TEMP TABLE roots ON COMMIT DROP AS
SELECT id AS loser, first_value(id) OVER (PARTITION BY application_id ORDER BY created_at, id) AS survivor
FROM folders WHERE parent_id IS NULL;
DELETE FROM roots WHERE loser = survivor;
ANALYZE roots;
CREATE TEMP TABLE subs ON COMMIT DROP AS
SELECT id AS loser, first_value(id) OVER (PARTITION BY target, name ORDER BY moving, id) AS survivor FROM (
    SELECT c.id, r.survivor AS target, c.name, 1 AS moving FROM folders c JOIN roots r ON c.parent_id = r.loser
    UNION ALL SELECT c.id, c.parent_id, c.name, 0 FROM folders c WHERE c.parent_id IN (SELECT survivor FROM roots)) x;
DELETE FROM subs WHERE loser = survivor;
ANALYZE subs;
CREATE TEMP TABLE docs ON COMMIT DROP AS
SELECT id AS loser FROM (
    SELECT d.id, first_value(d.id) OVER (PARTITION BY target, name ORDER BY moving, d.id) AS first FROM (
        SELECT d.id, s.survivor AS target, d.name, 1 AS moving FROM documents d JOIN subs s ON d.folder_id = s.loser
        UNION ALL SELECT d.id, d.folder_id, d.name, 0 FROM documents d WHERE d.folder_id IN (SELECT survivor FROM subs)
    ) d) x WHERE id <> first;
ANALYZE docs;
UPDATE documents d SET name = d.name || ' (merged ' || d.id || ')' FROM docs WHERE d.id = docs.loser;
UPDATE documents d SET folder_id = s.survivor FROM subs s WHERE d.folder_id = s.loser;
UPDATE comments c SET commentable_id = s.survivor FROM subs s WHERE c.commentable_type = 'folder' AND c.commentable_id = s.loser;
DELETE FROM folders f USING subs s WHERE f.id = s.loser;
UPDATE folders f SET parent_id = r.survivor FROM roots r WHERE f.parent_id = r.loser;
UPDATE comments c SET commentable_id = r.survivor FROM roots r WHERE c.commentable_type = 'folder' AND c.commentable_id = r.loser;
DELETE FROM folders f USING roots r WHERE f.id = r.loser
"""


def fresh(engine: sa.Engine, scale: float, documents: int) -> dict[str, int]:
    folders.create(engine, scale)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS dbsweep CASCADE")
        conn.exec_driver_sql("DROP TABLE IF EXISTS folders__merge_journal")
        conn.execute(sa.text("""
            INSERT INTO documents (folder_id, name, body)
            SELECT f.id, 'extra ' || d || '.txt', 'more of ' || f.id || '/' || d
            FROM folders f, generate_series(1, :n) d WHERE f.parent_id IS NOT NULL"""), {"n": documents})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
        conn.exec_driver_sql("CHECKPOINT")
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in ("folders", "documents", "comments")}


def outcome(engine: sa.Engine) -> tuple:
    with engine.connect() as conn:
        return tuple(conn.execute(sa.text(f"SELECT count(*), md5(string_agg(t::text, '' ORDER BY t::text)) FROM {t} t"))
                     .one() for t in ("folders", "documents", "comments"))


def by_hand(engine: sa.Engine) -> float:
    began = time.perf_counter()
    with engine.begin() as conn:
        for statement in BY_HAND.split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)
    return time.perf_counter() - began


def with_dbsweep(engine: sa.Engine, folder: Path) -> tuple[float, float, int, int]:
    text = (ROOT / "policies" / "folders.toml").read_text()
    text = text.replace('env.dev = { url = "embedded" }', 'database_name = "dbsweep_bench_merge"\nenv.dev = { url = "embedded" }')
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("constraint =", "batch_size =")))
    path = folder / "folders.toml"
    path.write_text(text)
    policy = load_policy(path)
    target = connect(policy)
    plan = service.make_plan(policy, "root_folders", target)
    service.record_gate(target, plan, gate(plan))
    assert plan.gate.passed, plan.gate.summary
    report = service.apply(policy, target, plan, dry_run=False)
    with engine.connect() as conn:
        journal = conn.execute(sa.text("SELECT count(*) FROM folders__merge_journal")).scalar()
    return report.seconds, report.batch_ms["max"], report.batches, journal


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=40)
    parser.add_argument("--documents", type=int, default=8)
    args = parser.parse_args()
    engine = sa.create_engine(embedded_url("dbsweep_bench_merge"))
    out = Console(width=160)
    sizes = fresh(engine, args.scale, args.documents)
    hand_s = by_hand(engine)
    hand_outcome = outcome(engine)
    fresh(engine, args.scale, args.documents)
    seconds, longest_ms, batches, journal = with_dbsweep(engine, Path(tempfile.mkdtemp()))
    same = outcome(engine) == hand_outcome
    table = Table(title=f"merge: {sizes['folders']:,} folders, {sizes['documents']:,} documents, "
                        f"{sizes['comments']:,} comments")
    for name in ("method", "seconds", "share of by-hand speed", "transactions", "longest transaction", "journal rows"):
        table.add_column(name, justify="left" if name == "method" else "right")
    table.add_row("by hand, one transaction, no journal", f"{hand_s:.2f}", "1.00", "1", f"{hand_s * 1000:.0f} ms", "0")
    table.add_row("dbsweep, batches of groups, journal", f"{seconds:.2f}", f"{hand_s / seconds:.2f}", f"{batches:,}",
                  f"{longest_ms:.0f} ms", f"{journal:,}")
    out.print(table)
    out.print(f"same outcome (every table, row for row): {'yes' if same else 'NO'}")
    engine.dispose()


if __name__ == "__main__":
    main()
