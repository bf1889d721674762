"""No run blocks a phase for ever, and every wait ends and says so: abandon, lock waits past the
retry budget, planning behind an idle lock holder, a signal during a long sleep."""

import os
import signal
import subprocess
import sys
import time

import sqlalchemy as sa

from dbsweep.ledger import Ledger
from tests.conftest import ROOT, checksums, count, ids, load_events, retention_policy, run_cli
from tests.helpers import wait_for_a_batch

NEW = "created_at >= now() - interval '7 days'"


def test_abandon_after_a_stopped_run_lets_a_changed_policy_run_and_keeps_undo(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=1000)
    keep = ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname, batch_size=200, extra='archive = "table"')
    first = run_cli("run", path, "--max-rows", "600")
    assert first.returncode == 4, first.stderr
    stopped = Ledger(pg).list_runs("testpol")[0]
    assert stopped.state == "stopped" and stopped.rows_done == 600

    path.write_text(path.read_text().replace("batch_size = 200", "batch_size = 500"))  # the operator's fix
    refused = run_cli("run", path)
    assert refused.returncode == 2 and f"dbsweep abandon {stopped.run_id}" in refused.stderr, refused.stderr

    abandoned = run_cli("abandon", stopped.run_id, "--policy", path)
    assert abandoned.returncode == 0, abandoned.stderr
    status = run_cli("status", path)
    assert "abandoned" in status.stdout and "undo: dbsweep restore" in status.stdout and stopped.run_id in status.stdout
    assert Ledger(pg).run(stopped.run_id).state == "abandoned"
    again = run_cli("abandon", stopped.run_id, "--policy", path)
    assert again.returncode == 2 and "not unfinished" in again.stderr

    fresh = run_cli("run", path)
    assert fresh.returncode == 0, fresh.stderr
    assert ids(pg, "events") == keep
    undo = run_cli("restore", stopped.run_id, "--policy", path)  # the abandoned run's 600 rows come back
    assert undo.returncode == 0, undo.stderr
    assert count(pg, "events") == len(keep) + 600


def _hold(engine: sa.Engine, statement: str) -> sa.Connection:
    conn = engine.connect()
    conn.exec_driver_sql("BEGIN")
    conn.exec_driver_sql(statement)
    return conn  # idle in a transaction, holding the lock, until closed


def test_a_lock_held_past_the_retries_stops_resumable_then_the_rerun_is_exact(tmp_path, pg, dbname):
    load_events(pg, old=2000, new=1000)
    keep = ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname, batch_size=500, extra='lock_timeout = "100 ms"')
    holder = _hold(pg, "LOCK TABLE events IN SHARE MODE")  # reads go on; every DELETE waits
    try:
        began = time.monotonic()
        result = run_cli("run", path)
        waited = time.monotonic() - began
    finally:
        holder.close()
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "lock wait" in lines[0] and "lock timeout" in lines[0].lower(), result.stderr
    assert waited < 60 and count(pg, "events") == 3000
    run = Ledger(pg).list_runs("testpol")[0]
    assert run.state == "stopped" and run.stop_reason.startswith("lock wait")
    rerun = run_cli("run", path)
    assert rerun.returncode == 0, rerun.stderr
    assert ids(pg, "events") == keep


def test_planning_behind_an_idle_lock_holder_ends_at_its_timeouts(tmp_path, pg, dbname):
    load_events(pg, old=200, new=100)
    path = retention_policy(tmp_path, dbname, extra='lock_timeout = "300 ms"')
    before = checksums(pg)
    holder = _hold(pg, "LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
    try:
        began = time.monotonic()
        result = run_cli("plan", path, timeout=60)
        waited = time.monotonic() - began
    finally:
        holder.close()
    assert result.returncode == 4 and "planning waited longer than lock_timeout" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and waited < 30
    assert checksums(pg) == before


def test_sigterm_during_a_long_sleep_stops_within_a_second(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=1000)
    keep = ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname, batch_size=500, extra="sleep_ms = 20000")
    proc = subprocess.Popen([sys.executable, "-m", "dbsweep.cli", "run", str(path)], cwd=ROOT, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_a_batch(pg)
        time.sleep(0.5)  # well inside the 20 s pause after the first batch
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    assert proc.returncode == 4, stderr
    assert took < 15, took  # the 20 s pause was cut short (a signal wakes it within 0.1 s; load aside)
    assert "signal (SIGTERM)" in stderr
    rerun = run_cli("run", path, "--batch-size", "100000")  # the rest in one batch: no 20 s pause
    assert rerun.returncode == 0, rerun.stderr
    assert ids(pg, "events") == keep
