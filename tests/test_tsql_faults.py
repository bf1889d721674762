"""Faults on a real T-SQL engine (the SQL Server tier): the phase lock refuses a second run, a row
lock held past every retry ends the run resumable (exit 4), and SIGKILLs mid-run resume to exactly
the rows that must survive, with the archive holding exactly the rest."""

import os
import random
import signal
import subprocess
import sys
import threading
import time

import sqlalchemy as sa

from dbsweep.dialects.mssql import APPLOCK, applock_resource
from dbsweep.ledger import Ledger
from tests.conftest import ROOT, run_cli
from tests.tsql import EVENTS, RETENTION, keys, load_order_events, rows, tsql_policy

NEW = "[Logged At] >= DATEADD(day, -7, SYSUTCDATETIME())"


def _start(path):
    return subprocess.Popen([sys.executable, "-m", "dbsweep.cli", "run", str(path)], cwd=ROOT, env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _batches(engine) -> int:
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT OBJECT_ID('dbsweep.batches')")).scalar() is None:
            return 0
        return conn.execute(sa.text("SELECT count(*) FROM dbsweep.batches")).scalar()


def _wait_for_the_killed_session(engine, seconds: float = 120) -> None:
    """Until the killed run's server session has ended (a COMMIT it had sent is then done or
    undone): its session holds the phase lock, which is free again only then."""
    from dbsweep.dialects.mssql import RELEASE_APPLOCK

    deadline = time.monotonic() + seconds
    with engine.connect() as conn:
        key = applock_resource(conn, "dbsweep:tsqlpol:purge")
        while conn.execute(APPLOCK, {"k": key}).scalar() < 0:
            assert time.monotonic() < deadline, "the killed run's session never ended"
            conn.rollback()
            time.sleep(0.05)
        conn.execute(RELEASE_APPLOCK, {"k": key})
        conn.commit()


def test_the_phase_lock_refuses_a_second_run_while_the_first_holds_it(tmp_path, ms):
    load_order_events(ms, old=300, new=100)
    before = rows(ms.engine, EVENTS)
    path = tsql_policy(tmp_path, ms, RETENTION.format(batch_size=100, extra=""))
    holder = ms.engine.connect()
    try:  # the lock a running phase holds, taken as dbsweep takes it
        assert holder.execute(APPLOCK, {"k": applock_resource(holder, "dbsweep:tsqlpol:purge")}).scalar() >= 0
        second = run_cli("run", path)
        assert second.returncode == 1 and "already running" in second.stderr, second.stdout + second.stderr
        assert rows(ms.engine, EVENTS) == before
    finally:
        holder.invalidate()  # the session ends, and its lock with it (a pooled connection would keep both)
        holder.close()
    assert run_cli("run", path).returncode == 0  # free again once the holder's session ends
    assert keys(ms.engine) == keys(ms.engine, where=NEW)


def test_a_row_lock_held_past_every_retry_ends_the_run_resumable(tmp_path, ms):
    load_order_events(ms, old=300, new=100)
    keep = keys(ms.engine, where=NEW)
    body = RETENTION.format(batch_size=100, extra='lock_timeout = "1 second"')
    path = tsql_policy(tmp_path, ms, body)
    assert run_cli("plan", path).returncode == 0
    holder = ms.engine.connect()
    holder.begin()
    oldest = holder.execute(sa.text(f"SELECT MIN([Event Id]) FROM {EVENTS} WHERE NOT ({NEW})")).scalar()
    holder.execute(sa.text(f"UPDATE {EVENTS} SET [Payload] = 'held' WHERE [Event Id] = :k"), {"k": oldest})
    try:
        waited = run_cli("run", path)
    finally:
        holder.rollback()
        holder.close()
    assert waited.returncode == 4, waited.stdout + waited.stderr
    assert "lock_timeout" in waited.stderr and len(waited.stderr.strip().splitlines()) == 1, waited.stderr
    resumed = run_cli("run", path)
    assert resumed.returncode == 0 and "resum" in resumed.stdout, resumed.stdout + resumed.stderr
    assert keys(ms.engine) == keep


def test_sigkills_mid_run_resume_to_exact_survivors_and_archive(tmp_path, ms):
    load_order_events(ms, old=3000, new=1000)
    original, keep = keys(ms.engine), keys(ms.engine, where=NEW)
    path = tsql_policy(tmp_path, ms, RETENTION.format(batch_size=100, extra='archive = "table"\nsleep_ms = 20'))
    rng = random.Random(11)
    for kill in range(3):
        proc = _start(path)
        target = _batches(ms.engine) + 2 + 2 * kill
        deadline = time.monotonic() + 120
        while _batches(ms.engine) < target:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run did not progress"
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.03))  # anywhere inside the next batch, or between two
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _wait_for_the_killed_session(ms.engine)
        survivors = keys(ms.engine)
        archived = [r[0] for r in rows(ms.engine, "[dbo].[Order Events__archive]")]
        assert len(archived) == len(set(archived)) and set(archived) | survivors == original
        assert not set(archived) & survivors and keep <= survivors  # each row in exactly one place
    finished = run_cli("run", path)
    assert finished.returncode == 0 and "resum" in finished.stdout, finished.stdout + finished.stderr
    assert keys(ms.engine) == keep
    run = Ledger(ms.engine).list_runs("tsqlpol")[0]
    assert run.state == "finished" and run.rows_done == len(original) - len(keep) == Ledger(ms.engine).ledger_rows(run.run_id)


def test_a_concurrent_writer_keeps_committing_through_a_purge(tmp_path, ms):
    load_order_events(ms, old=2000, new=500)
    keep = keys(ms.engine, where=NEW)
    path = tsql_policy(tmp_path, ms, RETENTION.format(batch_size=100, extra="sleep_ms = 5"))
    stop, commits, errors = threading.Event(), [], []

    def write():
        with ms.engine.connect() as conn:
            n = 10_000_000
            while not stop.is_set():
                n += 1
                try:
                    with conn.begin():
                        conn.execute(sa.text(f"INSERT INTO {EVENTS} VALUES (:k, 'new', SYSUTCDATETIME())"), {"k": n})
                    commits.append(n)
                except sa.exc.DBAPIError as exc:
                    errors.append(str(exc.orig)[:80])
                time.sleep(0.005)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        ran = run_cli("run", path)
    finally:
        stop.set()
        writer.join(30)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert not errors and commits
    assert keys(ms.engine) == keep | set(commits)
