"""Throttles and stops, on the embedded PostgreSQL: sleep between batches, replica lag, runtime."""

import sqlalchemy as sa

from dbsweep.dialects import dialect_for
from dbsweep.ledger import Ledger
from dbsweep.throttle import BatchSizer, ReplicaLagThrottle, StopRules
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
                            extra='max_replica_lag = "5 seconds"\nmax_runtime = "1 second"')
    ticks = iter(range(10_000))  # the test's clock: a quarter second passes at each look, whatever the machine
    plan, report, target = purge(path, clock=lambda: next(ticks) / 4)
    assert report.state == "stopped" and report.stop_reason == "runtime limit"
    assert 0 < report.rows < plan.rows_selected and report.replica_pauses == 0
    assert report.batches == 3  # started at 0; looked at before each batch: 0.25, 0.5, 0.75 s go on, 1 s stops
    with pg.connect() as conn:
        state, reason = conn.execute(sa.text("SELECT state, stop_reason FROM dbsweep.runs")).one()
    assert (state, reason) == ("stopped", "runtime limit")
    assert len(ids(pg, "events")) == 25000 - report.rows and keep <= ids(pg, "events")
    assert Ledger(pg).ledger_rows(report.run_id) == report.rows


def test_batch_sizer_adapts_to_its_target_within_bounds():
    sizer = BatchSizer(1000, target_ms=100, minimum=100, maximum=50_000)
    sizer.observe(1000, 0.001)  # 1M rows/s wants 100k rows per 100 ms: one batch grows it 4x at most
    assert sizer.size == 4000
    for _ in range(4):
        sizer.observe(sizer.size, sizer.size / 1e6)
    assert sizer.size == 50_000  # the maximum holds
    sizes = []
    for _ in range(30):  # the rows now cost 100 us each: 1,000 rows per 100 ms, reached as the old batches decay
        sizer.observe(sizer.size, sizer.size / 10_000)
        sizes.append(sizer.size)
    assert sizes == sorted(sizes, reverse=True) and 1000 <= sizes[-1] <= 1100
    sizer.observe(sizer.size, sizer.size / 10)  # 10 rows/s: never below the minimum
    for _ in range(10):
        sizer.observe(sizer.size, sizer.size / 10)
    assert sizer.size == 100
    fixed = BatchSizer(500)
    fixed.observe(500, 0.0001)
    assert fixed.size == 500


def test_batch_sizer_forgets_its_ramp_and_cuts_at_once_on_a_slow_batch():
    """A batch costs 7 ms of commit whatever its size, plus 0.5 us a row: the size the 100 ms target
    allows is (100 - 7) / 0.5 us = 186,000 rows."""
    def seconds(rows):
        return 0.007 + rows * 0.5e-6

    sizer = BatchSizer(10_000, target_ms=100)
    sizes = [sizer.size]
    for _ in range(6):
        sizer.observe(sizer.size, seconds(sizer.size))
        sizes.append(sizer.size)
    assert sizes[:2] == [10_000, 40_000]  # the ramp: 4x a batch at most
    assert sizes[3] >= 170_000  # within 10% of the target by the fourth batch: the small ones weigh little
    assert 184_000 <= sizes[-1] <= 186_000
    settled = sizer.size
    sizer.observe(settled, 10 * seconds(settled))  # rows ten times slower: about 1 s for this batch
    assert sizer.size < settled / 5  # the next batch is cut at once, not over several


def test_purge_with_target_batch_ms_grows_its_batches_and_keeps_every_new_row(tmp_path, pg, dbname):
    load_events(pg, old=40000, new=5000)
    keep = ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname, batch_size=200, extra="target_batch_ms = 200")
    plan, report, _ = purge(path)
    assert report.state == "finished" and report.rows == plan.rows_selected
    with pg.connect() as conn:
        sizes = conn.execute(sa.text("SELECT rows FROM dbsweep.batches WHERE run_id = :r ORDER BY batch_no"),
                             {"r": report.run_id}).scalars().all()
    # a key range walk sizes its ranges from the density it sees, so a batch is about, not exactly, its size
    assert sizes[0] < 2 * 200 and max(sizes) >= 4 * 200 and max(sizes) <= 250_000
    assert sum(sizes) == report.rows
    assert ids(pg, "events") == keep


def test_objects_from_before_a_run_are_left_out_of_garbage_collection_while_it_runs(tmp_path, pg, dbname):
    """A full collection over the heap Dagster and GE leave took 130 ms: inside a batch that would be
    a transaction held open 130 ms longer. The heap is frozen for the run and given back after."""
    import gc

    load_events(pg, old=3000, new=1000)
    keep = ids(pg, "events", NEW)
    frozen_during = []
    path = retention_policy(tmp_path, dbname, batch_size=500)
    plan, report, _ = purge(path, on_progress=lambda progress: frozen_during.append(gc.get_freeze_count()))
    assert report.rows == plan.rows_selected > 0 and ids(pg, "events") == keep
    assert frozen_during and min(frozen_during) > 0
    assert gc.get_freeze_count() == 0
