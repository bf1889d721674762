"""One history: with DAGSTER_HOME set, CLI plans, runs and verifications show in Dagster's asset
catalog as runless events tagged dbsweep/source: cli, and a dry run adds no materialization."""

import dagster as dg

from tests.conftest import ids, load_events, retention_policy, run_cli

NEW = "created_at >= now() - interval '7 days'"


def test_cli_runs_show_in_the_dagster_instance(tmp_path, pg, dbname):
    load_events(pg, old=600, new=400)
    keep = ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname)
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {"DAGSTER_HOME": str(home), "DBSWEEP_DAGSTER_HISTORY": "on"}
    plan_file = tmp_path / "plan.json"
    assert run_cli("plan", path, "-o", plan_file, env=env).returncode == 0
    assert run_cli("run", path, "--plan", plan_file, "--dry-run", env=env).returncode == 0
    assert run_cli("run", path, "--plan", plan_file, env=env).returncode == 0
    assert run_cli("verify", path, env=env).returncode == 0
    assert ids(pg, "events") == keep

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        def materializations(leaf):
            return instance.fetch_materializations(dg.AssetKey(["testpol", "purge", leaf]), limit=10).records

        def tags(record):
            return record.event_log_entry.dagster_event.event_specific_data.materialization.tags

        [profile] = materializations("profile")
        [applied] = materializations("apply")  # the real run only: the dry run is no materialization
        [verified] = materializations("verified")
        assert all(tags(r)["dbsweep/source"] == "cli" for r in (profile, applied, verified))
        assert tags(applied)["dbsweep/dry_run"] == "false"
        assert applied.event_log_entry.dagster_event.event_specific_data.materialization.metadata["rows"].value \
            == 1000 - len(keep)
        [observed] = instance.fetch_observations(dg.AssetKey(["testpol", "purge", "apply"]), limit=10).records
        observation = observed.event_log_entry.dagster_event.event_specific_data.asset_observation
        assert observation.tags["dbsweep/dry_run"] == "true" and observation.tags["dbsweep/source"] == "cli"
    finally:
        instance.dispose()


def test_without_dagster_home_the_cli_records_where_dbsweep_ui_looks(tmp_path, pg, dbname):
    """Nothing to set: the CLI's history goes to $DBSWEEP_HOME/dagster, the instance `dbsweep ui` starts on."""
    import os
    from pathlib import Path

    load_events(pg, old=60, new=40)
    due = 100 - len(ids(pg, "events", NEW))
    path = retention_policy(tmp_path, dbname, name="histpol")
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["DBSWEEP_DAGSTER_HISTORY"] = "on"
    import subprocess
    import sys

    from tests.conftest import ROOT
    ran = subprocess.run([sys.executable, "-m", "dbsweep.cli", "run", str(path)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    home = Path(os.environ["DBSWEEP_HOME"]) / "dagster"
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        records = instance.fetch_materializations(dg.AssetKey(["histpol", "purge", "apply"]), limit=5).records
        assert len(records) == 1 and records[0].event_log_entry.dagster_event.event_specific_data \
            .materialization.metadata["rows"].value == due
    finally:
        instance.dispose()
