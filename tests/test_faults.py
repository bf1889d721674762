"""Fault tests on the embedded PostgreSQL: repeated SIGKILLs of an archived purge, a server
restart in the middle of a run, and a concurrent writer that must keep committing."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from dbsweep.ledger import Ledger
from tests.conftest import ROOT, count, ids, load_events, retention_policy, run_cli
from tests.helpers import purge

NEW = "created_at >= now() - interval '7 days'"


def _start(path, *extra):
    return subprocess.Popen([sys.executable, "-m", "dbsweep.cli", "run", str(path), "--phase", "purge", *extra],
                            cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _batches(engine) -> int:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("batches", schema="dbsweep"):
            return 0
        return conn.execute(sa.text("SELECT count(*) FROM dbsweep.batches")).scalar()


def _kill_after(engine, proc, more_batches: int, jitter_s: float) -> None:
    target = _batches(engine) + more_batches
    deadline = time.monotonic() + 120
    while _batches(engine) < target:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not progress"
        time.sleep(0.01)
    time.sleep(jitter_s)  # land anywhere inside the next batch, or between batches
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _wait_for_orphaned_backends(engine)


def _wait_for_orphaned_backends(engine) -> None:
    """A killed client's server session may still be finishing a COMMIT it had sent: what the test
    reads next must not be split across that commit (survivors before it, ledger after it)."""
    deadline = time.monotonic() + 30
    with engine.connect() as conn:
        while conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                   "AND pid <> pg_backend_pid() AND state <> 'idle'")).scalar():
            assert time.monotonic() < deadline, "a killed run's session never ended"
            conn.rollback()
            time.sleep(0.01)


def _archived_ids(engine, mode: str, archive_dir: Path) -> list:
    with engine.connect() as conn:
        if mode == "table":
            return [r[0] for r in conn.execute(sa.text("SELECT id FROM events__archive"))]
        files = [r[0] for r in conn.execute(sa.text("SELECT archive FROM dbsweep.batches WHERE rows > 0"))]
    return [i for f in files for i in pq.read_table(archive_dir / f, columns=["id"]).column("id").to_pylist()]


@pytest.mark.parametrize("mode,walk", [("table", "key"), ("parquet", "key"), ("table", "blocks")])
def test_five_sigkills_of_an_archived_purge(tmp_path, pg, dbname, mode, walk):
    load_events(pg, old=30000, new=10000)
    original, keep = ids(pg, "events"), ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname, batch_size=300, archive_dir="arch",
                            extra=f'archive = "{mode}"\nsleep_ms = 15\nwalk = "{walk}"')
    rng = random.Random(7)
    for kill in range(5):
        proc = _start(path)
        _kill_after(pg, proc, more_batches=2 + 3 * kill, jitter_s=rng.uniform(0, 0.02))
        survivors = ids(pg, "events")
        archived = _archived_ids(pg, mode, tmp_path / "arch")
        # after every kill: archive ∪ survivors = original, no row twice, the ledger agrees
        assert len(archived) == len(set(archived))
        assert set(archived) | survivors == original and not set(archived) & survivors
        assert keep <= survivors
        with pg.connect() as conn:
            rows_done, ledger_sum = conn.execute(sa.text(
                "SELECT r.rows_done, (SELECT coalesce(sum(rows), 0) FROM dbsweep.batches b WHERE b.run_id = r.run_id) "
                "FROM dbsweep.runs r")).one()
        assert rows_done == ledger_sum == len(archived)
    assert len(ids(pg, "events")) > len(keep)  # the kills left work to do
    done = run_cli("run", path, "--phase", "purge")
    assert done.returncode == 0, done.stderr
    archived = _archived_ids(pg, mode, tmp_path / "arch")
    assert ids(pg, "events") == keep
    assert len(archived) == len(set(archived)) and set(archived) == original - keep
    runs = Ledger(pg).list_runs("testpol")
    assert len(runs) == 1 and runs[0].state == "finished" and runs[0].rows_done == len(original - keep)


def _server():
    from dbsweep.embedded import _server

    return _server(str(Path(os.environ["DBSWEEP_HOME"]) / "pgdata"))


def _started_with_batches(engine, path, batches: int):
    """A `dbsweep run` in its own process, once it has committed `batches` batches."""
    proc = _start(path)
    deadline = time.monotonic() + 120
    while _batches(engine) < batches:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    return proc


def _batches_after_restart(engine) -> int:
    deadline = time.monotonic() + 60
    while True:
        try:
            return _batches(engine)
        except sa.exc.OperationalError:  # the server is still starting
            assert time.monotonic() < deadline
            engine.dispose()
            time.sleep(0.1)


def _stop_server() -> None:
    import pgserver

    server = _server()
    pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def _start_server() -> None:
    _server().ensure_postgres_running()


def test_server_restart_mid_run_is_ridden_out_or_resumable(tmp_path, pg, dbname):
    load_events(pg, old=40000, new=10000)
    keep = ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname, batch_size=300, extra='archive = "table"\nsleep_ms = 30')
    proc = _started_with_batches(pg, path, 5)
    _stop_server()  # a short outage: retries with backoff ride it out
    _start_server()
    pg.dispose()
    at_restart = _batches_after_restart(pg)
    while proc.poll() is None and _batches_after_restart(pg) < at_restart + 3:
        time.sleep(0.02)
    if proc.poll() is None:  # riding it out: the phase lock, freed by the restart, is held again
        with pg.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")).scalar() == 1
    out, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 4), err
    pg.dispose()
    if proc.returncode == 4:
        assert "resume" in err
        assert run_cli("run", path, "--phase", "purge").returncode == 0
    assert ids(pg, "events") == keep
    assert count(pg, "events__archive") == 50000 - len(keep)
    run = Ledger(pg).list_runs("testpol")[0]
    assert run.state == "finished" and run.rows_done == 50000 - len(keep)


def test_server_down_longer_than_retries_ends_resumable(tmp_path, pg, dbname):
    load_events(pg, old=40000, new=10000)
    keep = ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname, batch_size=300, extra="sleep_ms = 10")
    proc = _started_with_batches(pg, path, 5)
    _stop_server()
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        _start_server()
    assert proc.returncode == 4, err
    assert "database unavailable" in err and len(err.strip().splitlines()) == 1
    pg.dispose()
    assert 0 < count(pg, "events") - len(keep) < 40000
    again = run_cli("run", path, "--phase", "purge")
    assert again.returncode == 0, again.stderr
    assert "resuming plan" in again.stdout and ids(pg, "events") == keep
    run = Ledger(pg).list_runs("testpol")[0]
    with pg.connect() as conn:
        ledger_sum = conn.execute(sa.text("SELECT sum(rows) FROM dbsweep.batches")).scalar()
    assert run.state == "finished" and run.rows_done == ledger_sum == 50000 - len(keep)


class Writer(threading.Thread):
    """Inserts and updates on the purged table from its own connection, one transaction each."""

    def __init__(self, engine, lock_timeout_ms: int):
        super().__init__(daemon=True)
        self.engine, self.lock_timeout_ms = engine, lock_timeout_ms
        self.commits, self.inserts, self.failures, self.longest_s = 0, 0, [], 0.0
        self.stop = threading.Event()

    def run(self):
        rng = random.Random(1)
        next_id = 10_000_000
        with self.engine.connect() as conn:
            conn.exec_driver_sql(f"SET lock_timeout = '{self.lock_timeout_ms}ms'")
            conn.commit()
            while not self.stop.is_set():
                began = time.perf_counter()
                try:
                    insert = rng.random() < 0.5
                    if insert:
                        next_id += 1
                        conn.execute(sa.text("INSERT INTO events VALUES (:i, 'writer', now())"), {"i": next_id})
                    else:
                        conn.execute(sa.text("UPDATE events SET payload = 'touched' WHERE id = :i"),
                                     {"i": rng.randint(1, 60000)})
                    conn.commit()
                    self.commits += 1
                    self.inserts += insert
                except sa.exc.DBAPIError as exc:
                    conn.rollback()
                    self.failures.append(str(exc.orig).splitlines()[0])
                self.longest_s = max(self.longest_s, time.perf_counter() - began)


def test_concurrent_writer_keeps_committing(tmp_path, pg, dbname):
    load_events(pg, old=45000, new=15000)
    keep = ids(pg, "events", NEW)
    writer = Writer(pg, lock_timeout_ms=2000)
    writer.start()
    time.sleep(0.3)
    before = writer.commits
    plan, report, _ = purge(retention_policy(tmp_path, dbname, batch_size=500))
    during = writer.commits - before
    writer.stop.set()
    writer.join(10)
    assert report.state == "finished" and report.batches > 50
    assert during > report.batches  # it committed all through the purge, not only after it
    assert writer.failures == []  # no statement of the writer waited its 2 s lock timeout on dbsweep's locks
    survivors = ids(pg, "events")
    assert keep <= survivors and not [i for i in survivors if i < 10_000_000 and i not in keep]
    assert count(pg, "events", "id >= 10000000") == writer.inserts > 0  # every row it wrote is kept
