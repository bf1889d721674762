"""Throttles and stops, on the embedded PostgreSQL: sleep between batches, replica lag, runtime."""

import sqlalchemy as sa

from dbsweep.dialects import dialect_for
from dbsweep.ledger import Ledger
from dbsweep.throttle import ReplicaLagThrottle, StopRules
from tests.conftest import ids, load_events, retention_policy
from tests.helpers import purge

NEW = "created_at >= now() - interval '7 days'"


def test_replica_lag_probe_on_a_primary_without_replicas(pg):
    with pg.connect() as conn:
        assert dialect_for(conn).replica_lag_seconds(conn) is None


def test_lag_throttle_waits_while_lag_is_over_the_limit():
    readings = iter([5.0, 3.0, 0.5, 9.0])
    naps = []
    throttle = ReplicaLagThrottle(lambda: next(readings), 1.0, StopRules(), poll_s=0.25, sleep=naps.append)
    throttle.wait(0)
    assert naps == [0.25, 0.25] and throttle.pauses == 1  # waited through 5.0 and 3.0, went on at 0.5
    stopping = StopRules()
    stopping.signalled = "SIGTERM"  # a stop request ends the wait at once
    throttle = ReplicaLagThrottle(lambda: 60.0, 1.0, stopping, sleep=naps.append)
    throttle.wait(0)
    assert len(naps) == 2


def test_purge_with_lag_limit_and_runtime_limit_records_why(tmp_path, pg, dbname):
    load_events(pg, old=20000, new=5000)
    keep = ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname, batch_size=200,
                            extra='max_replica_lag = "5 seconds"\nsleep_ms = 30\nmax_runtime = "1 second"')
    plan, report, target = purge(path)
    assert report.state == "stopped" and report.stop_reason == "runtime limit"
    assert 0 < report.rows < plan.rows_selected and report.replica_pauses == 0
    with pg.connect() as conn:
        state, reason = conn.execute(sa.text("SELECT state, stop_reason FROM dbsweep.runs")).one()
    assert (state, reason) == ("stopped", "runtime limit")
    assert len(ids(pg, "events")) == 25000 - report.rows and keep <= ids(pg, "events")
    assert Ledger(pg).ledger_rows(report.run_id) == report.rows
