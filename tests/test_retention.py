"""Retention on the embedded PostgreSQL: exactly the old rows go, every newer row survives."""

import math

import sqlalchemy as sa

from dbsweep import service
from dbsweep.ledger import Ledger
from tests.conftest import count, ids, load_events, retention_policy
from tests.helpers import plan_and_gate, purge

OLD = "created_at < now() - interval '7 days'"
NEW = "created_at >= now() - interval '7 days'"


def test_exact_survivors_integer_key(tmp_path, pg, dbname):
    load_events(pg, old=6000, new=4000)
    keep = ids(pg, "events", NEW)
    assert 3000 < len(keep) < 5000
    plan, report, target = purge(retention_policy(tmp_path, dbname, batch_size=700))
    assert ids(pg, "events") == keep  # every newer row survives, nothing else does
    assert report.rows == 10000 - len(keep) == plan.rows_selected
    assert report.batches in (math.ceil(report.rows / 700), math.ceil(report.rows / 700) + 1)
    assert Ledger(target.engine).ledger_rows(report.run_id) == report.rows


def test_composite_key(tmp_path, pg, dbname):
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE agg (client int, target text, ts timestamptz, v int, PRIMARY KEY (client, target, ts))")
        conn.exec_driver_sql("""INSERT INTO agg SELECT mod(g, 17), 't' || mod(g, 5), now() - make_interval(mins => 7 * g), g
                                FROM generate_series(1, 5000) g""")
    keep = count(pg, "agg", "ts >= now() - interval '7 days'")
    path = retention_policy(tmp_path, dbname, table="agg", batch_size=333)
    path.write_text(path.read_text().replace('time_column = "created_at"', 'time_column = "ts"'))
    plan, report, _ = purge(path)
    assert plan.steps[0].key == ["client", "target", "ts"]
    assert count(pg, "agg") == keep and count(pg, "agg", "ts < now() - interval '7 days'") == 0
    assert report.rows == 5000 - keep


def test_uuid_key(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=2000, key="uuid")
    keep = ids(pg, "events", NEW)
    purge(retention_policy(tmp_path, dbname, batch_size=500))
    assert ids(pg, "events") == keep


def test_table_without_key_walks_heap_blocks(tmp_path, pg, dbname):
    load_events(pg, old=8000, new=5000, key="none")
    keep = ids(pg, "events", NEW)
    plan, report, _ = purge(retention_policy(tmp_path, dbname, batch_size=1000))
    assert plan.steps[0].walk == "block"
    assert ids(pg, "events") == keep
    assert report.rows == 13000 - len(keep) and report.batches > 3


def test_where_narrows_the_selection(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=1000)
    keep = ids(pg, "events", f"{NEW} OR payload LIKE 'p1%'")
    purge(retention_policy(tmp_path, dbname, extra="where = \"payload NOT LIKE 'p1%'\""))
    assert ids(pg, "events") == keep


def test_frozen_plan_ignores_rows_added_after_planning(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=1000)
    policy, target, plan = plan_and_gate(retention_policy(tmp_path, dbname))
    with pg.begin() as conn:  # a late old row beyond the plan's key range
        conn.exec_driver_sql("INSERT INTO events VALUES (999999, 'late', now() - interval '30 days')")
    report = service.apply(policy, target, plan, dry_run=False)
    assert report.rows == plan.rows_selected
    assert ids(pg, "events", OLD) == {999999}


def test_max_rows_stops_resumably_then_resume_finishes(tmp_path, pg, dbname):
    load_events(pg, old=5000, new=1000)
    keep = ids(pg, "events", NEW)
    policy, target, plan = plan_and_gate(retention_policy(tmp_path, dbname, batch_size=400))
    first = service.apply(policy, target, plan, dry_run=False, max_rows=1000)
    assert first.state == "stopped" and first.stop_reason == "row cap" and first.rows == 1000
    assert service.resumable_plan(policy, "purge", target).plan_id == plan.plan_id
    second = service.apply(policy, target, plan, dry_run=False)
    assert second.run_id == first.run_id and second.resumed and second.state == "finished"
    assert ids(pg, "events") == keep
    assert Ledger(target.engine).ledger_rows(first.run_id) == second.rows == plan.rows_selected


def test_dry_run_changes_nothing(tmp_path, pg, dbname):
    load_events(pg, old=2000, new=1000)
    policy, target, plan = plan_and_gate(retention_policy(tmp_path, dbname))
    report = service.apply(policy, target, plan, dry_run=True)
    assert report.rows == plan.rows_selected and count(pg, "events") == 3000
    assert Ledger(target.engine).list_runs() == []


def test_analyze_after(tmp_path, pg, dbname):
    load_events(pg, old=2000, new=1000)
    purge(retention_policy(tmp_path, dbname, extra='after = ["analyze"]'))
    with pg.connect() as conn:
        analyzed = conn.execute(sa.text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'events'")).scalar()
    assert analyzed is not None


def test_walk_blocks_with_a_key_keeps_exactly_the_newer_rows(tmp_path, pg, dbname):
    load_events(pg, old=9000, new=4000)
    keep = ids(pg, "events", NEW)
    plan, report, target = purge(retention_policy(tmp_path, dbname, batch_size=800, extra='walk = "blocks"'))
    step = plan.steps[0]
    assert step.walk == "block" and step.key == ["id"] and step.last_key is not None
    assert ids(pg, "events") == keep
    assert report.rows == 13000 - len(keep) == plan.rows_selected and report.batches > 5
    assert Ledger(target.engine).ledger_rows(report.run_id) == report.rows
    assert service.verify(target, plan)[0]["remaining_selected"] == 0


def test_walk_blocks_stops_exactly_at_the_row_cap_and_resumes(tmp_path, pg, dbname):
    load_events(pg, old=6000, new=2000, key="none")
    keep = count(pg, "events", NEW)
    policy, target, plan = plan_and_gate(retention_policy(tmp_path, dbname, batch_size=700))
    first = service.apply(policy, target, plan, dry_run=False, max_rows=1500)
    assert first.state == "stopped" and first.stop_reason == "row cap" and first.rows == 1500
    assert count(pg, "events") == 8000 - 1500
    second = service.apply(policy, target, plan, dry_run=False, max_rows=1000)
    assert second.rows == 2500 and count(pg, "events") == 8000 - 2500
    last = service.apply(policy, target, plan, dry_run=False)
    assert last.state == "finished" and last.rows == plan.rows_selected
    assert count(pg, "events") == keep and count(pg, "events", OLD) == 0


def _update_a_row_into_a_swept_block(pg, beyond_block: int) -> tuple[int, int]:
    """VACUUM records the swept blocks' free space; a non-HOT update of an old row in a full,
    unswept block then puts its new version there, behind the walk's cursor."""
    with pg.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM events")
        moved = conn.execute(sa.text(f"SELECT id FROM events WHERE {OLD} AND ctid >= '({beyond_block + 2},0)'::tid "
                                     "ORDER BY ctid LIMIT 1")).scalar()
        conn.exec_driver_sql(f"UPDATE events SET created_at = created_at - interval '1 second' WHERE id = {moved}")
        block = conn.execute(sa.text(f"SELECT (ctid::text::point)[0] FROM events WHERE id = {moved}")).scalar()
    return moved, int(block)


def test_walk_blocks_reports_a_selected_row_updated_behind_its_cursor(tmp_path, pg, dbname):
    """The documented cost of walking by blocks: a selected row updated into an already-swept block
    during the run stays, and verify says so; the key walk deletes it."""
    for walk, remains in (("blocks", True), ("key", False)):
        with pg.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS events")
        load_events(pg, old=6000, new=2000)
        keep = ids(pg, "events", NEW)
        policy, target, plan = plan_and_gate(retention_policy(tmp_path, dbname, batch_size=500, extra=f'walk = "{walk}"'))
        service.apply(policy, target, plan, dry_run=False, max_rows=3000)
        with pg.connect() as conn:
            first_unswept = conn.execute(sa.text(f"SELECT (min(ctid)::text::point)[0] FROM events WHERE {OLD}")).scalar()
        moved, block = _update_a_row_into_a_swept_block(pg, int(first_unswept))
        assert block < first_unswept  # behind the cursor
        service.apply(policy, target, plan, dry_run=False)
        assert ids(pg, "events") == keep | ({moved} if remains else set())
        assert service.verify(target, plan)[0]["remaining_selected"] == (1 if remains else 0)


def test_one_backfill_window_purges_only_its_old_rows(tmp_path, pg, dbname):
    from datetime import timedelta

    from dbsweep.plan import utcnow
    from dbsweep.policy import load_policy
    from dbsweep.target import connect

    load_events(pg, old=6000, new=2000)  # old rows are 10 to about 20 days old
    now = utcnow()
    start, end = now - timedelta(days=15), now - timedelta(days=12)
    in_window = f"created_at >= '{start.isoformat()}' AND created_at < '{end.isoformat()}'"
    doomed = ids(pg, "events", in_window)
    assert 500 < len(doomed) < 6000
    keep = ids(pg, "events") - doomed
    policy = load_policy(retention_policy(tmp_path, dbname, batch_size=300))
    target = connect(policy)
    windowed = service.make_plan(policy, "purge", target, now=now, window=(start, end))
    assert windowed.rows_selected == len(doomed) and windowed.profile[0]["window"].startswith(start.isoformat())
    from expectations.runner import gate

    service.record_gate(target, windowed, gate(windowed))
    report = service.apply(policy, target, windowed, dry_run=False)
    assert ids(pg, "events") == keep and report.rows == len(doomed)
    assert service.verify(target, windowed)[0]["remaining_matching"] == 0
    newer_than_cutoff = service.make_plan(policy, "purge", target, now=now, window=(now - timedelta(days=3), now))
    assert newer_than_cutoff.rows_selected == 0  # a window past the cutoff selects nothing
