"""The Dagster layer: definitions load, metadata in dry-run and real mode, the gate holds."""

import dagster as dg

from pipelines.definitions import build_definitions
from tests.conftest import count, ids, load_events, retention_policy

NEW = "created_at >= now() - interval '7 days'"


def _defs(policy_dir):
    return build_definitions(str(policy_dir))


def _materialize(defs, selection, instance, run_config=None, raise_on_error=True):
    assets = list(defs.assets) + list(defs.asset_checks)
    return dg.materialize(assets, selection=selection, instance=instance, run_config=run_config,
                          resources=defs.resources, raise_on_error=raise_on_error)


def _real_run(policy_dir):
    """Materialize the test policy's phase for real: (definitions, instance, result)."""
    defs = _defs(policy_dir)
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(defs, dg.AssetSelection.groups("testpol_purge"), instance,
                          run_config={"ops": {"testpol__purge__apply": {"config": {"dry_run": False}}}})
    return defs, instance, result


def test_shipped_definitions_load():
    from pipelines import definitions

    dg.Definitions.validate_loadable(definitions.defs)
    keys = {key.to_user_string() for key in definitions.defs.resolve_all_asset_keys()}
    for phase in ("events", "aggregates"):
        assert {f"telemetry/{phase}/profile", f"telemetry/{phase}/apply", f"telemetry/{phase}/verified"} <= keys
    assert definitions.defs.resolve_job_def("telemetry__events")
    schedule = definitions.defs.resolve_schedule_def("telemetry__events__schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    checks = {key.name for key in definitions.defs.resolve_asset_graph().asset_check_keys}
    assert {"gate", "postconditions"} <= checks
    for phase in ("retire_delta", "sync_reset"):  # seed 001: each phase its own graph and job
        assert {f"orders/{phase}/profile", f"orders/{phase}/apply", f"orders/{phase}/verified"} <= keys
        assert definitions.defs.resolve_job_def(f"orders__{phase}")
    for phase in ("community", "reading", "tenant"):  # seed 000: each phase its own graph and job
        assert f"nes/{phase}/apply" in keys and definitions.defs.resolve_job_def(f"nes__{phase}")
    for policy in ("telemetry", "orders", "nes", "breezeway", "folders"):
        assert definitions.defs.resolve_job_def(f"{policy}__restore")
    assert "breezeway/dedupe_children/apply" in keys and definitions.defs.resolve_job_def("breezeway__dedupe_children")
    assert "folders/root_folders/apply" in keys and definitions.defs.resolve_job_def("folders__root_folders")
    backfill = definitions.defs.resolve_job_def("nes__reading__backfill")  # seed 000's readings, month by month
    assert backfill.partitions_def.get_partition_keys()[0] == "2022-01-01" and "nes/reading/backfill/apply" in keys


def test_dry_run_then_real_run_metadata(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=2000)
    keep = ids(pg, "events", NEW)
    retention_policy(tmp_path, dbname, batch_size=500)
    defs = _defs(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    everything = dg.AssetSelection.groups("testpol_purge")

    dry = _materialize(defs, everything, instance)
    assert dry.success and count(pg, "events") == 5000
    profile_md = dry.asset_materializations_for_node("testpol__purge__profile")[0].metadata
    assert profile_md["rows_total"].value == 5000 and profile_md["rows_selected"].value == 5000 - len(keep)
    for key in ("fraction", "oldest_selected", "newest_selected", "estimated_bytes", "age_histogram", "cutoff"):
        assert key in profile_md
    # a dry run changes nothing, so it is no materialization: an observation tagged dbsweep/dry_run,
    # and no verification after it (which would only fail)
    assert not dry.asset_materializations_for_node("testpol__purge__apply")
    assert not dry.asset_materializations_for_node("testpol__purge__verified")
    observed = [e.asset_observation_data.asset_observation for e in dry.all_events
                if e.event_type_value == "ASSET_OBSERVATION"]
    assert len(observed) == 1 and observed[0].tags["dbsweep/dry_run"] == "true"
    apply_md = observed[0].metadata
    assert apply_md["dry_run"].value is True and apply_md["rows"].value == 5000 - len(keep)
    checks = {e.check_name: e for e in dry.get_asset_check_evaluations()}
    assert checks["gate"].passed and "postconditions" not in checks
    assert profile_md["dagster/row_count"].value == 5000 and "| 1-7d |" in profile_md["age_histogram"].value

    real = _materialize(defs, everything, instance,
                        run_config={"ops": {"testpol__purge__apply": {"config": {"dry_run": False}}}})
    assert real.success and ids(pg, "events") == keep
    [applied] = real.asset_materializations_for_node("testpol__purge__apply")
    apply_md = applied.metadata
    assert apply_md["rows"].value == 5000 - len(keep) and applied.tags["dbsweep/dry_run"] == "false"
    for key in ("rows_per_s", "batches", "batch_p50_ms", "batch_p95_ms", "batch_max_ms", "run_id"):
        assert key in apply_md
    post = [e for e in real.get_asset_check_evaluations() if e.check_name == "postconditions"][0]
    assert post.passed


def test_failed_gate_stops_apply_in_run_and_alone(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=2000)
    retention_policy(tmp_path, dbname, extra="expect = { max_rows = 10 }")
    defs = _defs(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    config = {"ops": {"testpol__purge__apply": {"config": {"dry_run": False}}}}

    result = _materialize(defs, dg.AssetSelection.groups("testpol_purge"), instance, config, raise_on_error=False)
    gate = [e for e in result.get_asset_check_evaluations() if e.check_name == "gate"][0]
    assert not gate.passed
    assert not result.asset_materializations_for_node("testpol__purge__apply")
    assert count(pg, "events") == 5000

    apply_key = dg.AssetKey(["testpol", "purge", "apply"])
    alone = _materialize(defs, dg.AssetSelection.assets(apply_key), instance, config, raise_on_error=False)
    assert not alone.success
    failure = [e for e in alone.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "gate failed" in failure.event_specific_data.error.message
    assert count(pg, "events") == 5000


def test_protected_env_needs_confirm_in_dagster(tmp_path, pg, dbname):
    load_events(pg, old=300, new=200)
    retention_policy(tmp_path, dbname, env_block='env.dev = { url = "embedded", protected = true }')
    defs = _defs(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    group = dg.AssetSelection.groups("testpol_purge")
    refused = _materialize(defs, group, instance, {"ops": {"testpol__purge__apply": {"config": {"dry_run": False}}}},
                           raise_on_error=False)
    assert not refused.success and count(pg, "events") == 500
    confirmed = _materialize(defs, group, instance,
                             {"ops": {"testpol__purge__apply": {"config": {"dry_run": False, "confirm": "purge",
                                                                                  "accept_no_undo": True}}}})
    assert confirmed.success and count(pg, "events") == len(ids(pg, "events", NEW))


def test_restore_job_puts_an_archived_run_back(tmp_path, pg, dbname):
    load_events(pg, old=600, new=400)
    retention_policy(tmp_path, dbname, batch_size=250, extra='archive = "table"')
    defs, instance, real = _real_run(tmp_path)
    run_id = real.asset_materializations_for_node("testpol__purge__apply")[0].metadata["run_id"].value
    survivors = count(pg, "events")
    assert survivors == len(ids(pg, "events", NEW)) < 1000

    job = defs.resolve_job_def("testpol__restore")
    result = job.execute_in_process(instance=instance, run_config={
        "ops": {"testpol__restore_run": {"config": {"run_id": run_id}}}})
    assert result.success and count(pg, "events") == 1000
    output = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"][0]
    metadata = output.event_specific_data.metadata
    assert metadata["rows_restored"].value == 1000 - survivors and metadata["rows_skipped"].value == 0


def test_apply_logs_progress_every_n_batches(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=1000)
    retention_policy(tmp_path, dbname, batch_size=100, extra="progress_every = 10")
    defs, instance, result = _real_run(tmp_path)
    batches = result.asset_materializations_for_node("testpol__purge__apply")[0].metadata["batches"].value
    lines = [e.user_message for e in instance.all_logs(result.run_id) if "rows/s, batch" in (e.user_message or "")]
    assert len(lines) == batches // 10 and "events" in lines[0]


def test_cascade_phase_in_dagster_needs_its_own_confirmation(tmp_path, pg, dbname):
    from dbsweep.demo import nes
    from tests.conftest import ROOT, write_policy

    nes.create(pg, scale=0.03)
    body = (ROOT / "policies" / "nes.toml").read_text().split("[[phase]]", 1)[1]
    write_policy(tmp_path, "[[phase]]" + body, dbname, name="nes",
                 env_block='env.dev = { url = "embedded", protected = true }')
    defs = _defs(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    group = dg.AssetSelection.groups("nes_community")
    contacts = count(pg, "contacts")
    for confirm in ("", "tenant"):
        config = {"ops": {"nes__community__apply": {"config": {"dry_run": False, "confirm": confirm}}}}
        refused = _materialize(defs, group, instance, config, raise_on_error=False)
        assert not refused.success and count(pg, "contacts") == contacts
    config = {"ops": {"nes__community__apply": {"config": {"dry_run": False, "confirm": "community",
                                                           "accept_no_undo": True}}}}
    done = _materialize(defs, group, instance, config)
    profile = done.asset_materializations_for_node("nes__community__profile")[0].metadata
    assert "addresses" in profile["profile"].value and "newest_activity" in profile["profile"].value
    rows = done.asset_materializations_for_node("nes__community__apply")[0].metadata["rows"].value
    assert rows == profile["rows_selected"].value > 0 and count(pg, "contacts") < contacts
    assert all(e.passed for e in done.get_asset_check_evaluations())


def test_backfill_window_partition_purges_only_that_window(tmp_path, pg, dbname):
    """A retention phase with `backfill` gets a graph partitioned by time windows: materializing
    one day purges the old rows of that day only, through its own plan, gate and verification."""
    from datetime import timedelta

    from dbsweep.plan import utcnow

    load_events(pg, old=6000, new=2000)  # old rows are 10 to about 20 days old
    day = (utcnow() - timedelta(days=14)).date()
    start = f"'{day.isoformat()} 00:00:00+00'"
    in_day = f"created_at >= timestamptz {start} AND created_at < timestamptz {start} + interval '1 day'"
    doomed = ids(pg, "events", in_day)
    assert doomed
    keep = ids(pg, "events") - doomed
    retention_policy(tmp_path, dbname, batch_size=200,
                     extra=f'backfill = {{ start = {(day - timedelta(days=30)).isoformat()}, window = "day" }}')
    defs = _defs(tmp_path)
    assert defs.resolve_job_def("testpol__purge__backfill").partitions_def is not None
    assert not defs.resolve_job_def("testpol__purge").partitions_def  # the steady-state graph is unchanged
    backfill = dg.AssetSelection.assets(*(dg.AssetKey(["testpol", "purge", "backfill", leaf])
                                          for leaf in ("profile", "apply", "verified")))
    instance = dg.DagsterInstance.ephemeral()
    assets = list(defs.assets) + list(defs.asset_checks)
    dry = dg.materialize(assets, selection=backfill, instance=instance, resources=defs.resources,
                         partition_key=day.isoformat())
    assert dry.success and count(pg, "events") == 8000
    real = dg.materialize(assets, selection=backfill, instance=instance, resources=defs.resources,
                          partition_key=day.isoformat(),
                          run_config={"ops": {"testpol__purge__backfill__apply": {"config": {"dry_run": False}}}})
    assert real.success and ids(pg, "events") == keep
    profile = real.asset_materializations_for_node("testpol__purge__backfill__profile")[0].metadata
    assert profile["rows_selected"].value == len(doomed) and profile["window"].value.startswith(day.isoformat())
    applied = real.asset_materializations_for_node("testpol__purge__backfill__apply")[0].metadata
    assert applied["rows"].value == len(doomed)


def test_health_asset_reports_and_its_check_passes(tmp_path, pg, dbname):
    load_events(pg, old=300, new=200)
    retention_policy(tmp_path, dbname)
    defs = _defs(tmp_path)
    result = _materialize(defs, dg.AssetSelection.assets(dg.AssetKey(["testpol", "health"])), dg.DagsterInstance.ephemeral())
    metadata = result.asset_materializations_for_node("testpol__health")[0].metadata
    assert metadata["problems"].value == 0 and metadata["warnings"].value >= 1  # the retention rule has rows due
    assert "retention" in metadata["report"].value and "due" in metadata["report"].value
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("no_problems", True)]


def test_dedupe_graph_then_restore_job(tmp_path, pg, dbname):
    """Seed 003's kind through Dagster: profile → blocking gate → apply → verified, one job per
    phase like every kind, and the restore job puts the duplicates back."""
    from tests.test_dedupe import expected_survivors, load, policy_for, rows_by_id

    load(pg, keys=60)
    before, survivors = rows_by_id(pg), expected_survivors(pg)
    policy_for(tmp_path, dbname, "rebuild")
    defs = _defs(tmp_path)
    assert defs.resolve_job_def("testpol__dedupe")
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(defs, dg.AssetSelection.groups("testpol_dedupe"), instance,
                          run_config={"ops": {"testpol__dedupe__apply": {"config": {"dry_run": False}}}})
    assert result.success and set(rows_by_id(pg)) == survivors
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"gate": True, "postconditions": True}
    run_id = result.asset_materializations_for_node("testpol__dedupe__apply")[0].metadata["run_id"].value
    restored = defs.resolve_job_def("testpol__restore").execute_in_process(instance=instance, run_config={
        "ops": {"testpol__restore_run": {"config": {"run_id": run_id}}}})
    assert restored.success and rows_by_id(pg) == before


def test_merge_graph_then_restore_job(tmp_path, pg, dbname):
    """Seed 004's kind through Dagster: the phase's graph for real, then the restore job."""
    from dbsweep.demo import folders
    from tests.test_merge import policy, snapshot

    folders.create(pg, scale=0.05)
    before = snapshot(pg)
    policy(tmp_path, dbname)
    defs = _defs(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(defs, dg.AssetSelection.groups("folders_root_folders"), instance,
                          run_config={"ops": {"folders__root_folders__apply": {"config": {"dry_run": False}}}})
    assert result.success
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"gate": True, "postconditions": True}
    with pg.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM (SELECT application_id FROM folders WHERE parent_id IS NULL "
                                    "GROUP BY 1 HAVING count(*) > 1) g").scalar() == 0
    run_id = result.asset_materializations_for_node("folders__root_folders__apply")[0].metadata["run_id"].value
    restored = defs.resolve_job_def("folders__restore").execute_in_process(instance=instance, run_config={
        "ops": {"folders__restore_run": {"config": {"run_id": run_id}}}})
    assert restored.success and snapshot(pg) == before
