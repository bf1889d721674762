"""A throttle driven by the database's load, not a guessed sleep: after each committed batch the
run pauses while sessions wait on locks, while the policy's throttle query is over its bound, and
long enough to keep its time in batches under max_duty of the wall time."""

import threading
import time

import pytest
import sqlalchemy as sa

from dbsweep.ledger import Ledger
from dbsweep.throttle import DutyCycle, StopRules
from tests.conftest import ids, load_events, retention_policy, run_cli
from tests.helpers import purge, wait_for_a_batch

NEW = "created_at >= now() - interval '7 days'"


class StillClock:
    """A clock that stands still except while the run pauses: each pause moves it on by exactly what
    was asked. Against it, every second of wall time the duty cycle sees is a second it paused."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_duty_cycle_pauses_for_what_the_batches_owe_the_wall_time():
    clock = StillClock()
    duty = DutyCycle(0.4, StopRules(clock=clock, sleep=clock.sleep))
    duty.after_batch(0.2)  # 0.2 s of batch at t=0 is owed 0.5 s of wall time
    assert clock.now == pytest.approx(0.5) and duty.paused_s == pytest.approx(0.5)
    clock.now += 1.0  # a second spent outside batches (archive, ledger, commits) pays for the next one
    duty.after_batch(0.2)
    assert clock.now == pytest.approx(1.5) and duty.paused_s == pytest.approx(0.5)
    duty.after_batch(0.4)  # 0.8 s of batches wants 2 s since the start: 0.5 s more
    assert clock.now == pytest.approx(2.0) and duty.paused_s == pytest.approx(1.0)
    stopping = StopRules(clock=clock, sleep=clock.sleep)
    stopping.signalled = "SIGTERM"  # a stop request is never kept waiting by the duty cycle
    DutyCycle(0.1, stopping).after_batch(5.0)
    assert clock.now == pytest.approx(2.0)


def test_max_duty_keeps_the_batches_to_their_share_of_the_wall_time(tmp_path, pg, dbname):
    load_events(pg, old=15000, new=5000)
    keep = ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname, batch_size=1000, extra="max_duty = 0.4")
    clock = StillClock()
    _, report, _ = purge(path, clock=clock, sleep=clock.sleep)
    assert ids(pg, "events") == keep and report.batches >= 10
    # The run's clock moved only in its pauses: all of them together are what its batches owed.
    # A batch's ledger duration stops before its commit, and the last batch owes nothing (at most the longest): the two bounds.
    durations = [ms / 1000 for ms in Ledger(pg).batch_durations(report.run_id)]
    assert report.throttled_s == pytest.approx(clock.now)
    assert (sum(durations) - max(durations)) / 0.4 <= report.throttled_s <= report.seconds / 0.4, (durations, report.seconds)


def _after_the_first_batch(engine, action, moments: list) -> threading.Thread:
    """Once the run has committed its first batch (and so paused, if its signal is over the limit),
    do `action` and note the database's clock: no later batch may start before that moment."""
    def watch():
        wait_for_a_batch(engine)
        time.sleep(0.2)  # not needed for the proof below; it only lets the pause show in throttled_s
        with engine.connect() as conn:
            moments.append(conn.execute(sa.text("SELECT clock_timestamp()")).scalar())
        action()

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


def _held_until(engine, run_id: str, moment) -> None:
    """The run's first batch came before `moment`, every other one after it: the run waited."""
    with engine.connect() as conn:
        starts = conn.execute(sa.text("SELECT started_at FROM dbsweep.batches WHERE run_id = :r ORDER BY batch_no"),
                              {"r": run_id}).scalars().all()
    assert len(starts) > 1 and starts[0] < moment and all(s > moment for s in starts[1:]), (moment, starts[:3])


def test_sessions_waiting_on_locks_pause_the_run_until_they_are_served(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=1000)
    keep = ids(pg, "events", NEW)
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE accounts (id int PRIMARY KEY, balance int)")
        conn.exec_driver_sql("INSERT INTO accounts VALUES (1, 0)")
    holder = pg.connect()
    holder.execute(sa.text("UPDATE accounts SET balance = 1 WHERE id = 1"))  # holds the row lock

    def waiter():
        with pg.connect() as conn:
            conn.execute(sa.text("UPDATE accounts SET balance = 2 WHERE id = 1"))  # waits for the holder
            conn.commit()

    waiting = threading.Thread(target=waiter)
    waiting.start()
    deadline = time.monotonic() + 120
    while not _waiting_on_locks(pg):  # the waiter is queued behind the holder before the run starts
        assert time.monotonic() < deadline
        time.sleep(0.05)
    moments = []
    releaser = _after_the_first_batch(pg, lambda: (holder.commit(), holder.close()), moments)
    path = retention_policy(tmp_path, dbname, batch_size=500, extra="max_waiting_sessions = 0")
    try:
        _, report, _ = purge(path)
    finally:
        releaser.join(300)
        waiting.join(60)
    assert ids(pg, "events") == keep
    assert report.throttled_s > 0
    _held_until(pg, report.run_id, moments[0])  # it waited for the blocked session to be served


def _waiting_on_locks(engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND wait_event_type = 'Lock'")).scalar() > 0


def test_the_throttle_query_pauses_the_run_while_it_is_over_its_bound(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=1000)
    keep = ids(pg, "events", NEW)
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE busy_flag (reason text)")
        conn.exec_driver_sql("INSERT INTO busy_flag VALUES ('nightly report running')")

    def clear():
        with pg.begin() as conn:
            conn.exec_driver_sql("DELETE FROM busy_flag")

    moments = []
    releaser = _after_the_first_batch(pg, clear, moments)
    path = retention_policy(tmp_path, dbname, batch_size=500,
                            extra='throttle_query = "SELECT count(*) FROM busy_flag WHERE reason LIKE \'%report%\'"\n'
                                  "throttle_max = 0")
    try:
        _, report, _ = purge(path)
    finally:
        releaser.join(300)
    assert ids(pg, "events") == keep and report.throttled_s > 0
    _held_until(pg, report.run_id, moments[0])


def test_a_throttle_query_that_is_not_one_select_is_refused(tmp_path, pg, dbname):
    load_events(pg, old=30, new=10)
    path = retention_policy(tmp_path, dbname, extra='throttle_query = "DELETE FROM events"\nthrottle_max = 0')
    result = run_cli("plan", path)
    assert result.returncode == 2 and "throttle_query must be one SELECT" in result.stderr, result.stderr


def test_sessions_running_statements_pause_the_run_and_idle_transactions_do_not(tmp_path, pg, dbname):
    """max_active_sessions (gh-ost's Threads_running): a session busy in a statement holds the run
    back until it is done; a session sitting idle in an open transaction is not load."""
    from dbsweep import service
    from tests.helpers import plan_and_gate

    load_events(pg, old=3000, new=1000)
    keep = ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname, batch_size=500, extra="max_active_sessions = 0")
    idle = pg.connect()
    idle.execute(sa.text("SELECT 1"))  # an open transaction, idle: not counted
    policy, target, plan = plan_and_gate(path)
    def run_a_long_statement():
        with pg.connect() as conn:
            try:
                conn.execute(sa.text("SELECT pg_sleep(600)"))  # until the test cancels it
            except sa.exc.DBAPIError:
                pass

    busy = threading.Thread(target=run_a_long_statement)
    busy.start()
    deadline = time.monotonic() + 120
    while not _sleeping(pg):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    moments = []
    releaser = _after_the_first_batch(pg, lambda: _cancel_sleep(pg), moments)
    try:
        report = service.apply(policy, target, plan, dry_run=False)
    finally:
        releaser.join(300)
        busy.join(60)
    assert ids(pg, "events") == keep
    assert report.throttled_s > 0
    _held_until(pg, report.run_id, moments[0])  # held back while the statement ran, and went on once it ended

    load_events(pg, old=3000, new=1000, table="events_again")
    again = retention_policy(tmp_path, dbname, batch_size=500, extra="max_active_sessions = 0")
    again.write_text(again.read_text().replace('table = "events"', 'table = "events_again"'))
    _, report, _ = purge(again)
    idle.close()
    assert report.throttled_s == 0 and ids(pg, "events_again") == ids(pg, "events_again", NEW)


def _sleeping(engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND state = 'active' AND query LIKE 'SELECT pg_sleep(600)%'")).scalar() > 0


def _cancel_sleep(engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                             "AND query LIKE 'SELECT pg_sleep(600)%' AND pid <> pg_backend_pid()"))
