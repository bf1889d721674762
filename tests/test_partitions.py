"""The partition fast path: whole expired partitions go (dropped, or moved to the archive schema
and restorable), the partition holding the cutoff is purged in batches, every in-window row stays."""

from datetime import timedelta

import pytest
import sqlalchemy as sa

from dbsweep.ledger import Ledger
from dbsweep.restore import restore_run
from tests.conftest import count, ids, retention_policy
from tests.helpers import purge

NEW = "created_at >= now() - interval '7 days'"


def load_partitioned(engine) -> None:
    """Daily partitions from 12 days ago to 3 days ahead, a default partition, 40 rows an hour."""
    with engine.begin() as conn:
        conn.exec_driver_sql("""CREATE TABLE events (id bigint, payload text, created_at timestamptz NOT NULL,
                                PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)""")
        today = conn.execute(sa.text("SELECT current_date")).scalar()
        for offset in range(-12, 4):
            day = today + timedelta(days=offset)
            conn.exec_driver_sql(f"CREATE TABLE events_{day:%Y%m%d} PARTITION OF events "
                                 f"FOR VALUES FROM ('{day}') TO ('{day + timedelta(days=1)}')")
        conn.exec_driver_sql("CREATE TABLE events_default PARTITION OF events DEFAULT")
        conn.exec_driver_sql("CREATE INDEX ON events (created_at)")
        conn.exec_driver_sql("""INSERT INTO events SELECT g, 'p' || g, now() - make_interval(secs => g * 90)
                                FROM generate_series(1, 40 * 24 * 12) g""")
        conn.exec_driver_sql("""INSERT INTO events VALUES (-1, 'ancient', now() - interval '400 days'),
                                                         (-2, 'future', now() + interval '30 days')""")


def partitions(engine) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'events'::regclass"))}


@pytest.mark.parametrize("archive,walk", [("none", "key"), ("table", "key"), ("table", "blocks")])
def test_fast_path_drops_only_whole_expired_partitions(tmp_path, pg, dbname, archive, walk):
    load_partitioned(pg)
    before, keep = ids(pg, "events"), ids(pg, "events", NEW)
    before_parts = partitions(pg)
    path = retention_policy(tmp_path, dbname, batch_size=500, extra=f'archive = "{archive}"\nwalk = "{walk}"')
    plan, report, target = purge(path)

    whole = [s for s in plan.steps if s.walk == "partition"]
    batched = [s for s in plan.steps if s.walk != "partition"]
    assert {s.walk for s in batched} == {"key" if walk == "key" else "block"}
    assert len(whole) == 5  # 12..8 days ago lie wholly before the cutoff; day 7 holds it
    assert plan.profile[0]["whole_partitions"] == [s.table for s in whole]
    assert {s.table.split(".")[1] for s in batched} == {"events_default", min(
        p for p in before_parts if p != "events_default" and p not in {s.table.split(".")[1] for s in whole})}
    assert ids(pg, "events") == keep  # every in-window row stays, nothing else
    assert {-2} <= keep and -1 not in ids(pg, "events")
    gone = {s.table.split(".")[1] for s in whole}
    assert partitions(pg) == before_parts - gone  # only whole expired partitions left the table
    assert report.rows == len(before) - len(keep) == plan.rows_selected
    assert Ledger(pg).ledger_rows(report.run_id) == report.rows

    if archive == "table":
        with pg.connect() as conn:
            moved = {r[0] for r in conn.execute(sa.text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'dbsweep_archive'"))}
        assert moved == {f"{name}__{report.run_id}" for name in gone}
        restore_run(target.engine, report.run_id, tmp_path)
        assert ids(pg, "events") == before and partitions(pg) == before_parts
    else:
        with pg.connect() as conn:
            assert not any(sa.inspect(conn).has_table(name) for name in gone)


def test_fast_path_off_and_where_walk_in_batches(tmp_path, pg, dbname):
    load_partitioned(pg)
    keep = ids(pg, "events", f"{NEW} OR payload LIKE 'p1%'")
    path = retention_policy(tmp_path, dbname, batch_size=500, extra="where = \"payload NOT LIKE 'p1%'\"")
    plan, report, _ = purge(path)
    assert all(s.walk != "partition" for s in plan.steps)  # a `where` never drops a whole partition
    assert ids(pg, "events") == keep
    assert count(pg, "events", "payload LIKE 'p1%' AND created_at < now() - interval '7 days'") > 0
