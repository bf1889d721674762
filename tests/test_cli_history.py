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
    env = {"DAGSTER_HOME": str(home)}
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
