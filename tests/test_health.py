"""`dbsweep health` on real databases: what is due, what is kept, sessions that block or linger."""

import re
import threading
import time
from datetime import timedelta

import sqlalchemy as sa

from dbsweep.health import PROBLEM, WARN, health_report
from dbsweep.policy import load_policy
from dbsweep.target import connect
from tests.conftest import (
    RETENTION,
    count,
    load_events,
    retention_policy,
    run_cli,
    write_policy,
)
from tests.helpers import purge


def _findings(path, **kw):
    policy = load_policy(path)
    return {(f.check, f.subject): f for f in health_report(policy, connect(policy), **kw)}


def test_retention_due_then_nothing_due_and_exact_rows(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=2000)  # old rows are 10 to about 20 days old
    path = retention_policy(tmp_path, dbname)
    before = _findings(path)
    assert before[("table", "events")].value.startswith("5,000 rows")
    due = before[("retention", "purge")]
    assert due.status == WARN and re.search(r"deletes is (19|20) days old", due.value)
    assert ("largest index", "events_pkey") in before and before[("connections", "server")].status != PROBLEM
    purge(path)
    after = _findings(path)
    assert after[("table", "events")].value.startswith(f"{count(pg, 'events'):,} rows")
    assert after[("retention", "purge")].value.startswith("nothing due (7 days); oldest row")
    assert all(f.status != PROBLEM for f in after.values())


def test_kept_rows_are_not_due(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=2000)
    path = retention_policy(tmp_path, dbname, extra="where = \"payload LIKE 'p1%'\"")
    purge(path)  # the old rows not matching `where` stay, older than the cutoff
    kept = _findings(path)[("retention", "purge")]
    assert kept.status != WARN and re.search(r"nothing due \(7 days\); [\d,]+ older rows kept \(not matching the policy's where: .*p1%.*\); "
                                             r"oldest row (19|20) days old", kept.value), kept.value


def test_blocked_idle_and_long_running_sessions_exit_1(tmp_path, pg, dbname):
    load_events(pg, old=100, new=100)
    path = retention_policy(tmp_path, dbname)
    holder = pg.connect()
    holder.execute(sa.text("UPDATE events SET payload = 'held' WHERE id = 1"))  # and stays idle in transaction
    blocked_started, sleeper_started = threading.Event(), threading.Event()

    def blocked():
        with pg.connect() as conn:
            blocked_started.set()
            conn.execute(sa.text("UPDATE events SET payload = 'waits' WHERE id = 1"))
            conn.rollback()

    def sleeper():
        with pg.connect() as conn:
            sleeper_started.set()
            try:
                conn.execute(sa.text("SELECT pg_sleep(600)"))  # until the test cancels it
            except sa.exc.DBAPIError:
                pass

    threads = [threading.Thread(target=blocked), threading.Thread(target=sleeper)]
    for thread in threads:
        thread.start()
    try:
        blocked_started.wait(60)
        sleeper_started.wait(60)
        deadline = time.monotonic() + 120
        while not _seen_for_over_a_second(pg):  # the three sessions, each over --long-running
            assert time.monotonic() < deadline
            time.sleep(0.1)
        result = run_cli("health", path, "--long-running", "1 second")
        found = [f for f in _findings(path, long_running=timedelta(seconds=1)).values()
                 if f.check in ("blocked", "idle in transaction", "long-running")]
    finally:
        with pg.connect() as conn:
            conn.execute(sa.text("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE "
                                 "'SELECT pg_sleep(600)%' AND pid <> pg_backend_pid()"))
        holder.rollback()
        holder.close()
        for thread in threads:
            thread.join(30)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "health: blocked pid" in lines[0]
    for check in ("blocked", "idle in transaction", "long-running", "pg_sleep"):
        assert check in result.stdout, check
    by_check = {f.check: f for f in found}
    assert by_check["blocked"].status == PROBLEM and "UPDATE events SET payload = 'waits'" in by_check["blocked"].value
    assert by_check["idle in transaction"].status == WARN and "pg_sleep(600)" in by_check["long-running"].value


def test_sqlite_health_counts_rows_and_finds_what_is_due(tmp_path):
    db = tmp_path / "local.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE events (id INTEGER PRIMARY KEY, created_at DATETIME NOT NULL)")
        conn.exec_driver_sql("INSERT INTO events VALUES (1, datetime('now', '-30 days')), (2, datetime('now'))")
    path = write_policy(tmp_path, RETENTION.format(table="events", batch_size=10, extra=""), "unused",
                        env_block=f'env.dev = {{ url = "sqlite:///{db}" }}')
    found = _findings(path)
    assert found[("table", "events")].value == "2 rows"
    assert found[("retention", "purge")].status == WARN and "30 days old" in found[("retention", "purge")].value
    assert {check for check, _ in found} == {"connectivity", "table", "retention"}


def test_partitioned_table_rows_size_and_due(tmp_path, pg, dbname):
    """The parent of a partitioned table keeps no statistics: its leaves are summed."""
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE events (id bigint, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at)")
        conn.exec_driver_sql("CREATE TABLE events_old PARTITION OF events FOR VALUES FROM ('2000-01-01') TO ('2020-01-01')")
        conn.exec_driver_sql("CREATE TABLE events_new PARTITION OF events FOR VALUES FROM ('2020-01-01') TO (MAXVALUE)")
        conn.exec_driver_sql("INSERT INTO events SELECT g, now() - make_interval(days => mod(g, 30)) FROM generate_series(1, 300) g")
    found = _findings(retention_policy(tmp_path, dbname))
    rows = found[("table", "events")].value
    assert rows.startswith("300 rows") and not rows.endswith(" 0 B")
    assert "due" in found[("retention", "purge")].value and "29 days old" in found[("retention", "purge")].value


def _seen_for_over_a_second(engine) -> bool:
    """The holder idle in its transaction, the blocked UPDATE and the sleeper, each for over a second."""
    with engine.connect() as conn:
        return conn.execute(sa.text("""
            SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
              AND ((state = 'idle in transaction' AND now() - state_change > interval '1 second')
                   OR (state = 'active' AND now() - query_start > interval '1 second'))""")).scalar() >= 3

