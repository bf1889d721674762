"""max_replica_lag against a real streaming replica: a standby of the embedded server, made with
pg_basebackup. Pausing its replay makes pg_stat_replication.replay_lag grow on the primary, which
must hold the purge after its committed batch until replay resumes."""

import os
import shutil
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from dbsweep import service
from dbsweep.embedded import _server, dbsweep_home
from tests.conftest import ids, load_events, retention_policy
from tests.helpers import plan_and_gate

NEW = "created_at >= now() - interval '7 days'"


@pytest.fixture
def standby(pg, dbname):
    """A streaming standby of the embedded server, on its own socket directory; yields an engine
    on `dbname` there."""
    import pgserver

    server = _server(str(dbsweep_home() / "pgdata"))
    info = server.get_postmaster_info()
    port = int(info.port or 5432)
    folder = dbsweep_home() / f"standby-{uuid.uuid4().hex[:8]}"
    folder.mkdir(mode=0o700)
    if server.system_user:  # pgserver runs PostgreSQL as its own user when started by root
        import pwd

        owner = pwd.getpwnam(server.system_user)
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    as_user = {"user": server.system_user} if server.system_user else {}
    pgserver.pg_basebackup(["-h", str(info.socket_dir), "-p", str(port), "-U", "postgres", "-D", str(folder),
                            "-R", "-X", "stream", "-c", "fast"], timeout=300, **as_user)
    pgserver.pg_ctl(["-w", "-l", str(folder / "log.txt"), "-o", f"-k {folder} -p {port + 1} -c listen_addresses=''",
                     "start"], pgdata=folder, timeout=60, **as_user)
    engine = sa.create_engine(sa.URL.create("postgresql+psycopg", username="postgres", database=dbname, port=port + 1,
                                            query={"host": str(folder)}), isolation_level="AUTOCOMMIT")
    try:
        _wait_for(lambda: _streaming(pg), "the standby to stream")
        yield engine
    finally:
        engine.dispose()
        pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=folder, timeout=60, **as_user)
        shutil.rmtree(folder, ignore_errors=True)


def _streaming(pg) -> bool:
    with pg.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")).scalar() > 0


def _batches(pg) -> int:
    with pg.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM dbsweep.batches")).scalar()


def _replay_lag(pg) -> float:
    """The standby's replay lag as the primary's statistics give it, in seconds (0 when none)."""
    with pg.connect() as conn:
        return float(conn.execute(sa.text("SELECT coalesce(max(extract(epoch FROM replay_lag)), 0) "
                                          "FROM pg_stat_replication")).scalar())


def _steady(pg) -> bool:
    """No batch committed over two looks at the ledger half a second apart."""
    first = _batches(pg)
    time.sleep(0.5)
    return _batches(pg) == first


def _wait_for(condition, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_lagging_replica_holds_the_purge_until_it_catches_up(tmp_path, pg, dbname, standby):
    load_events(pg, old=20000, new=5000)
    keep = ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname, batch_size=500, extra='max_replica_lag = "1 second"\nsleep_ms = 100')
    policy, target, plan = plan_and_gate(path)
    with standby.connect() as conn:
        conn.execute(sa.text("SELECT pg_wal_replay_pause()"))
    outcome = {}
    purge = threading.Thread(target=lambda: outcome.update(report=service.apply(policy, target, plan, dry_run=False)))
    purge.start()
    try:
        _wait_for(lambda: _batches(pg) > 0, "a first batch")
        _wait_for(lambda: _replay_lag(pg) > 1.0, "the standby's replay lag to pass the limit", 120)
        # the purge looks at the lag after each committed batch: one more may land, then it waits
        _wait_for(lambda: _steady(pg), "the purge to stop committing", 120)
        held_at = _batches(pg)
        assert held_at < plan.rows_selected // 500 and purge.is_alive()
        _wait_for(lambda: _replay_lag(pg) > 3.0, "more lag", 120)  # time passes, while nothing is committed
        assert _batches(pg) == held_at and purge.is_alive()
    finally:
        with standby.connect() as conn:
            conn.execute(sa.text("SELECT pg_wal_replay_resume()"))
        purge.join(120)
    report = outcome["report"]
    assert report.state == "finished" and report.replica_pauses >= 1 and report.replica_paused_s > 0
    assert ids(pg, "events") == keep
    _wait_for(lambda: ids(standby, "events") == keep, "the standby to replay the purge")
