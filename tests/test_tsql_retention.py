"""Retention on a real T-SQL engine (the SQL Server tier), through the CLI: the rows kept, the
archive, restore row for row, status, verify; a walk SQL Server has not refused before anything changes."""

import pytest

from dbsweep.ledger import Ledger

from tests.conftest import run_cli
from tests.tsql import EVENTS, RETENTION, keys, load_order_events, rows, tsql_policy

NEW = "[Logged At] >= DATEADD(day, -7, SYSUTCDATETIME())"


@pytest.mark.parametrize("archive", ["table", "parquet"])
def test_purge_keeps_the_new_rows_archives_the_old_and_restores_them(tmp_path, ms, archive):
    load_order_events(ms, old=1500, new=500)
    before = rows(ms.engine, EVENTS)
    keep = keys(ms.engine, where=NEW)
    extra = f'archive = "{archive}"'
    path = tsql_policy(tmp_path, ms, RETENTION.format(batch_size=200, extra=extra),
                       archive_dir=str(tmp_path / "archive"))
    planned = run_cli("plan", path)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    ran = run_cli("run", path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert keys(ms.engine) == keep and len(keep) < len(before)
    assert "finished" in ran.stdout
    if archive == "table":
        assert len(rows(ms.engine, "[dbo].[Order Events__archive]")) == len(before) - len(keep)
    else:
        assert list((tmp_path / "archive").rglob("*.parquet"))

    verified = run_cli("verify", path)
    assert verified.returncode == 0 and "passed" in verified.stdout, verified.stdout + verified.stderr
    (run,) = Ledger(ms.engine).list_runs()
    assert run.state == "finished" and run.rows_done == len(before) - len(keep)
    status = run_cli("status", path)
    assert status.returncode == 0 and run.run_id in status.stdout and "finished" in status.stdout, status.stderr

    restored = run_cli("restore", run.run_id, "--policy", path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert rows(ms.engine, EVENTS) == before  # row for row, NULLs and times as they were
    again = run_cli("restore", run.run_id, "--policy", path)
    assert again.returncode == 0 and rows(ms.engine, EVENTS) == before


def test_the_block_walk_is_refused_before_anything_changes(tmp_path, ms):
    load_order_events(ms, old=300, new=100)
    before = rows(ms.engine, EVENTS)
    path = tsql_policy(tmp_path, ms, RETENTION.format(batch_size=100, extra='walk = "blocks"'))
    result = run_cli("run", path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "blocks" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert rows(ms.engine, EVENTS) == before


def test_the_phase_graph_materializes_against_the_t_sql_engine(tmp_path, ms):
    """Profile, the blocking gate, apply and verification, as Dagster runs them, on SQL Server's dialect."""
    import dagster as dg

    from pipelines.definitions import build_definitions

    load_order_events(ms, old=600, new=200)
    keep = keys(ms.engine, where=NEW)
    tsql_policy(tmp_path, ms, RETENTION.format(batch_size=100, extra=""))
    defs = build_definitions(str(tmp_path))
    result = dg.materialize(list(defs.assets) + list(defs.asset_checks), selection=dg.AssetSelection.groups("tsqlpol_purge"),
                            instance=dg.DagsterInstance.ephemeral(), resources=defs.resources,
                            run_config={"ops": {"tsqlpol__purge__apply": {"config": {"dry_run": False}}}})
    assert result.success and keys(ms.engine) == keep
    profile = result.asset_materializations_for_node("tsqlpol__purge__profile")[0].metadata
    assert profile["rows_total"].value == 800 and profile["rows_selected"].value == 800 - len(keep)
    [applied] = result.asset_materializations_for_node("tsqlpol__purge__apply")
    assert applied.metadata["rows"].value == 800 - len(keep)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"gate": True, "postconditions": True}
