"""The CLI as a user runs it: exit codes, one-line errors, frozen plan files, kills and resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from dbsweep.ledger import Ledger
from tests.conftest import ROOT, count, ids, load_events, retention_policy, run_cli

NEW = "created_at >= now() - interval '7 days'"


def _ledger_batches(engine) -> int:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_schema("dbsweep") or not sa.inspect(conn).has_table("batches", schema="dbsweep"):
            return 0
        return conn.execute(sa.text("SELECT count(*) FROM dbsweep.batches")).scalar()


BAD = [
    ("unknown key", 'tabel_name = "x"', "unknown key 'tabel_name'"),
    ("malformed duration", None, "malformed duration '7 dayz'"),
    ("unknown table", None, "table 'no_such_table' not found"),
    ("unknown column", None, "column 'created' not found in table 'events'"),
    ("not boolean", 'where = "created_at + interval \'1 day\'"', "is not a boolean expression"),
    ("two statements", 'where = "id > 0; DROP TABLE events"', "must be one boolean expression, not 2 statements"),
    ("subquery", 'where = "id IN (SELECT id FROM events)"', "is not allowed"),
    ("unknown column in where", 'where = "colour = \'red\'"', "unknown column 'colour'"),
    ("injection in name", None, "not found"),
    ("missing env var", None, "environment variable DBSWEEP_TEST_NOT_SET is not set"),
]


@pytest.mark.parametrize("case,extra,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(tmp_path, pg, dbname, case, extra, message):
    load_events(pg, old=500, new=500)
    path = retention_policy(tmp_path, dbname, extra=extra or "")
    text = path.read_text()
    if case == "malformed duration":
        text = text.replace('"7 days"', '"7 dayz"')
    elif case == "unknown table":
        text = text.replace('table = "events"', 'table = "no_such_table"')
    elif case == "unknown column":
        text = text.replace('time_column = "created_at"', 'time_column = "created"')
    elif case == "injection in name":
        text = text.replace('table = "events"', 'table = "events; DROP TABLE events; --"')
    elif case == "missing env var":
        text = text.replace('env.dev = { url = "embedded" }', 'env.dev = { url_env = "DBSWEEP_TEST_NOT_SET" }')
    path.write_text(text)
    for verb in (["plan", path], ["run", path, "--phase", "purge"]):
        result = run_cli(*verb)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
    assert count(pg, "events") == 1000
    assert _ledger_batches(pg) == 0


def test_cutoff_in_the_future_exits_2(tmp_path, pg, dbname):
    load_events(pg, old=10, new=10)
    path = retention_policy(tmp_path, dbname)
    path.write_text(path.read_text().replace('older_than = "7 days"', "cutoff = 2999-01-01T00:00:00Z"))
    result = run_cli("plan", path)
    assert result.returncode == 2 and "is in the future" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert count(pg, "events") == 20


def test_protected_env_needs_confirm(tmp_path, pg, dbname):
    load_events(pg, old=300, new=200)
    path = retention_policy(tmp_path, dbname, env_block='env.dev = { url = "embedded", protected = true }')
    result = run_cli("run", path, "--phase", "purge")
    assert result.returncode == 2 and "needs --confirm purge" in result.stderr
    assert count(pg, "events") == 500
    keep = ids(pg, "events", NEW)
    unarchived = run_cli("run", path, "--phase", "purge", "--confirm", "purge")  # and nothing would be kept
    assert unarchived.returncode == 2 and "--accept-no-undo" in unarchived.stderr and count(pg, "events") == 500
    ok = run_cli("run", path, "--phase", "purge", "--confirm", "purge", "--accept-no-undo")
    assert ok.returncode == 0, ok.stderr
    assert ids(pg, "events") == keep


def test_password_never_printed(tmp_path, dbname):
    path = retention_policy(tmp_path, dbname, env_block='env.dev = { url_env = "DBSWEEP_TEST_URL" }')
    result = run_cli("plan", path, env={"DBSWEEP_TEST_URL": "postgresql://app:Sup3rS3cret@127.0.0.1:1/x"})
    assert result.returncode == 1
    assert "Sup3rS3cret" not in result.stderr + result.stdout and "***" in result.stderr


def test_failing_gate_deletes_nothing_and_tampered_plan_is_refused(tmp_path, pg, dbname):
    load_events(pg, old=600, new=400)
    path = retention_policy(tmp_path, dbname, extra="expect = { max_rows = 100 }")
    plan_file = tmp_path / "plan.json"
    result = run_cli("plan", path, "-o", plan_file)
    assert result.returncode == 3 and "gate refused" in result.stderr
    body = json.loads(plan_file.read_text())
    assert body["phases"][0]["gate"]["passed"] is False
    body["phases"][0]["gate"]["passed"] = True  # an edited file does not override the ledger
    plan_file.write_text(json.dumps(body))
    result = run_cli("run", path, "--plan", plan_file)
    assert result.returncode == 3 and "gate failed" in result.stderr
    result = run_cli("run", path, "--phase", "purge")
    assert result.returncode == 3
    assert count(pg, "events") == 1000 and _ledger_batches(pg) == 0
    refusals = Ledger(pg).list_runs("testpol")  # each refused real run is a recorded stop
    assert [r.state for r in refusals] == ["refused", "refused"]
    assert all(r.stop_reason.startswith("gate: ") and r.rows_done == 0 for r in refusals)
    status = run_cli("status", path)
    assert status.returncode == 0 and "refused" in status.stdout


def test_plan_file_is_executed_exactly(tmp_path, pg, dbname):
    load_events(pg, old=2000, new=1000)
    keep = ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname)
    plan_file = tmp_path / "cutoff_report.json"
    assert run_cli("plan", path, "-o", plan_file).returncode == 0
    frozen = json.loads(plan_file.read_text())["phases"][0]
    with pg.begin() as conn:
        conn.exec_driver_sql("INSERT INTO events VALUES (500000, 'late', now() - interval '20 days')")
    dry = run_cli("run", path, "--plan", plan_file, "--dry-run")
    assert dry.returncode == 0 and "nothing changed" in dry.stdout and count(pg, "events") == 3001
    result = run_cli("run", path, "--plan", plan_file)
    assert result.returncode == 0, result.stderr
    assert ids(pg, "events") == keep | {500000}
    with pg.connect() as conn:
        rows = conn.execute(sa.text("SELECT rows_done FROM dbsweep.runs WHERE plan_id = :p"), {"p": frozen["plan_id"]}).scalar()
    assert rows == frozen["steps"][0]["rows_selected"]
    verify = run_cli("verify", path)
    assert verify.returncode == 0 and "expectations passed" in verify.stdout
    status = run_cli("status", path)
    assert status.returncode == 0 and "finished" in status.stdout


def _start_run(path, batch_size):
    return subprocess.Popen(
        [sys.executable, "-m", "dbsweep.cli", "run", str(path), "--phase", "purge", "--batch-size", str(batch_size)],
        cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_batches(engine, at_least, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ledger_batches(engine) >= at_least:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the run did not reach the batch count in time")


def test_sigkill_mid_purge_then_resume(tmp_path, pg, dbname):
    load_events(pg, old=60000, new=20000)
    keep = ids(pg, "events", NEW)
    old = 80000 - len(keep)
    path = retention_policy(tmp_path, dbname, extra="sleep_ms = 20")
    proc = _start_run(path, 500)
    _wait_for_batches(pg, 10, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    remaining_old = count(pg, "events") - len(keep)
    assert 0 < remaining_old < old  # killed mid-purge
    assert ids(pg, "events", NEW) == keep
    result = run_cli("run", path, "--phase", "purge", "--batch-size", "5000")
    assert result.returncode == 0, result.stderr
    assert "resuming plan" in result.stdout
    assert ids(pg, "events") == keep
    with pg.connect() as conn:
        runs = conn.execute(sa.text("SELECT run_id, state, rows_done FROM dbsweep.runs")).all()
        ledger_rows = conn.execute(sa.text("SELECT sum(rows) FROM dbsweep.batches")).scalar()
    assert len(runs) == 1 and runs[0].state == "finished"
    assert runs[0].rows_done == ledger_rows == old


def test_sigint_stops_after_the_batch_with_exit_4(tmp_path, pg, dbname):
    load_events(pg, old=40000, new=10000)
    keep = ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname, extra="sleep_ms = 20")
    proc = _start_run(path, 500)
    _wait_for_batches(pg, 5, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 4, stderr
    assert "resumable" in stderr
    with pg.connect() as conn:
        state, reason, done = conn.execute(sa.text("SELECT state, stop_reason, rows_done FROM dbsweep.runs")).one()
    assert state == "stopped" and reason == "signal (SIGINT)"
    assert count(pg, "events") == 50000 - done
    assert run_cli("run", path, "--phase", "purge").returncode == 0
    assert ids(pg, "events") == keep


def test_cli_restore_puts_rows_back_and_is_idempotent(tmp_path, pg, dbname):
    load_events(pg, old=500, new=500)
    path = retention_policy(tmp_path, dbname, batch_size=200, extra='archive = "parquet"')
    ran = run_cli("run", path, "--phase", "purge")
    assert ran.returncode == 0, ran.stderr
    run_id = Ledger(pg).list_runs("testpol")[0].run_id
    assert count(pg, "events") < 1000
    first = run_cli("restore", run_id, "--policy", path)
    assert first.returncode == 0, first.stderr
    assert "restored" in first.stdout and count(pg, "events") == 1000
    second = run_cli("restore", run_id, "--policy", path)
    assert second.returncode == 0 and "already restored" in second.stdout and count(pg, "events") == 1000
    unknown = run_cli("restore", "nosuchrun", "--policy", path)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1


def test_run_one_window_then_bad_windows_exit_2(tmp_path, pg, dbname):
    from datetime import timedelta

    from dbsweep.plan import utcnow

    load_events(pg, old=6000, new=2000)  # old rows are 10 to about 20 days old
    day = (utcnow() - timedelta(days=14)).date()
    start = f"timestamptz '{day.isoformat()} 00:00:00+00'"
    doomed = ids(pg, "events", f"created_at >= {start} AND created_at < {start} + interval '1 day'")
    keep = ids(pg, "events") - doomed
    path = retention_policy(tmp_path, dbname, batch_size=200)
    result = run_cli("run", path, "--phase", "purge", "--window", day.isoformat())
    assert result.returncode == 0, result.stderr
    assert ids(pg, "events") == keep and f"{len(doomed):,}" in result.stdout
    for window, message in (("2022-13", "malformed window"), ("2022-03-01..2022-02-01", "is empty"),
                            ("yesterday", "malformed window")):
        bad = run_cli("run", path, "--phase", "purge", "--window", window)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and message in bad.stderr, bad.stderr
    assert ids(pg, "events") == keep
