"""[alerts]: each threshold fires on data built to cross it and stays quiet on data built to stay
under it; `dbsweep check` exits 1 when one fires; Dagster's sensors post to a real webhook."""

import threading
import time

import dagster as dg
import sqlalchemy as sa

from dbsweep.alerts import evaluate
from dbsweep.policy import load_policy
from dbsweep.target import connect
from tests.conftest import load_events, retention_policy, run_cli
from tests.helpers import webhook

CROSSED = """
[alerts]
rows_due = { max = 10 }
oldest_row = { grace = "1 day" }
dead_tuples = { max_fraction = 0.2 }
table_bytes = { max = 1000 }
blocked_sessions = { max = 0, severity = "error" }
run_failed = { severity = "error" }
"""
UNDER = """
[alerts]
rows_due = { max = 1000000 }
oldest_row = { grace = "100 days" }
dead_tuples = { max_fraction = 0.9 }
table_bytes = { max = 1000000000000 }
blocked_sessions = { max = 5 }
run_failed = { severity = "error" }
"""


def _policy(tmp_path, dbname, alerts: str, extra: str = ""):
    path = retention_policy(tmp_path, dbname, extra=extra)
    path.write_text(path.read_text() + alerts)
    return path


def _bloat(pg):
    with pg.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE events SET (autovacuum_enabled = false)")
        conn.exec_driver_sql("DELETE FROM events WHERE mod(id, 2) = 0")
    with pg.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
        conn.commit()


def test_every_alert_fires_above_its_threshold_and_not_below(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=1000)
    _bloat(pg)
    crossed = _policy(tmp_path, dbname, CROSSED, extra="expect = { max_rows = 1 }")
    assert run_cli("run", crossed).returncode == 3  # refused by its gate: the last run did not finish
    holder = pg.connect()
    holder.execute(sa.text("UPDATE events SET payload = 'held' WHERE id = 1"))
    started = threading.Event()

    def blocked():
        with pg.connect() as conn:
            started.set()
            conn.execute(sa.text("UPDATE events SET payload = 'waits' WHERE id = 1"))
            conn.rollback()

    thread = threading.Thread(target=blocked)
    thread.start()
    try:
        started.wait(10)
        time.sleep(1)
        policy = load_policy(crossed)
        deadline = time.monotonic() + 120
        while True:  # the statistics may take a moment to show the dead tuples
            results = evaluate(policy, connect(policy))
            if all(r.fired for r in results) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        check = run_cli("check", crossed)
    finally:
        holder.rollback()
        holder.close()
        thread.join(30)
    fired = {r.alert for r in results if r.fired}
    assert fired == {"rows_due", "oldest_row", "dead_tuples", "table_bytes", "blocked_sessions", "run_failed"}, results
    assert check.returncode in (1, 3)  # the gate of this policy refuses too (expect max_rows = 1)

    under = _policy(tmp_path, dbname, UNDER)
    assert run_cli("run", under).returncode == 0  # a finished run; the rows left are not due
    with pg.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM events")  # the dead tuples of the purge and the bloat are gone
        conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
    deadline = time.monotonic() + 120
    while True:
        quiet = evaluate(load_policy(under), connect(load_policy(under)))
        if not [r for r in quiet if r.fired] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {r.alert for r in quiet} == fired and not [r for r in quiet if r.fired], quiet
    result = run_cli("check", under)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alerts" in result.stdout


def test_check_exits_1_when_an_alert_fires_and_changes_nothing(tmp_path, pg, dbname):
    load_events(pg, old=300, new=100)
    path = _policy(tmp_path, dbname, "[alerts]\nrows_due = { max = 10 }\n")
    result = run_cli("check", path)
    assert result.returncode == 1 and "alerts fired: rows_due purge (warn)" in result.stderr, result.stderr
    with pg.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar() == 400


def test_sensors_post_failed_runs_and_failed_checks_to_the_webhook(tmp_path, pg, dbname, monkeypatch):
    from assets.sensors import failed_checks_webhook, run_failure_webhook
    from pipelines.definitions import build_definitions

    with webhook() as (url, received):
        monkeypatch.setenv("DBSWEEP_WEBHOOK_URL", url)
        load_events(pg, old=300, new=100)
        _policy(tmp_path, dbname, "[alerts]\nrows_due = { max = 10, severity = \"error\" }\n",
                extra="expect = { max_rows = 1 }")
        defs = build_definitions(str(tmp_path))
        instance = dg.DagsterInstance.ephemeral()
        everything = list(defs.assets) + list(defs.asset_checks)
        failed = dg.materialize(everything, selection=dg.AssetSelection.assets(dg.AssetKey(["testpol", "purge", "apply"])),
                                resources=defs.resources, instance=instance, raise_on_error=False,
                                run_config={"ops": {"testpol__purge__apply": {"config": {"dry_run": False}}}})
        assert not failed.success
        context = dg.build_run_status_sensor_context(
            sensor_name="dbsweep_run_failure_webhook", dagster_event=failed.get_run_failure_event(),
            dagster_instance=instance, dagster_run=failed.dagster_run).for_run_failure()
        run_failure_webhook(context)
        health = dg.materialize(everything, selection=dg.AssetSelection.assets(dg.AssetKey(["testpol", "health"])),
                                resources=defs.resources, instance=instance)
        assert health.success  # an alert check fails; the run does not
        context = dg.build_run_status_sensor_context(
            sensor_name="dbsweep_failed_checks_webhook", dagster_event=health.get_run_success_event(),
            dagster_instance=instance, dagster_run=health.dagster_run)
        failed_checks_webhook(context)
    assert len(received) == 2, received
    run_message, checks_message = received
    assert run_message["dbsweep"]["event"] == "run_failed" and "failed" in run_message["text"]
    assert checks_message["dbsweep"]["checks"] == ["testpol/health:alert_rows_due"], checks_message
    assert "rows due" in checks_message["text"]
