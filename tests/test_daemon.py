"""The fleet under the process that runs it in production: `dagster-daemon run` over a workspace,
Dagster's storage on dagster-postgres, the queued run coordinator with the limits `dbsweep ui`
writes. What the daemon did is read back from the run storage, not from the configuration."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from dbsweep.embedded import embedded_url
from tests.conftest import RETENTION, ids, load_events, write_policy
from tests.daemon import (
    deployment,
    ended_backfills,
    launch_asset_backfill,
    overlaps_per_partition,
    peak_concurrency,
    run_spans,
    timeline,
    wait_for,
)
from tests.helpers import webhook

TARGETS = [f"t{i:02d}" for i in range(1, 11)]
MAX_RUNS = 4
RENAMED = """
[schedules]
check = "* * * * *"

[[phase]]
name = "readings"
kind = "retention"
table = "readings_renamed_since"
time_column = "created_at"
older_than = "7 days"
"""


def test_two_backfills_of_a_ten_database_fleet_a_schedule_tick_and_a_failure_alert(tmp_path):
    """Two backfills over the same 10 targets, launched together: never two runs on one database
    at once, never more than `max_concurrent_runs`, every run succeeded, every database purged
    once (the second run on each finds nothing left). Meanwhile a one-minute schedule ticks on a
    second policy whose table was renamed: its run fails and the failure sensor posts it."""
    import dagster as dg

    from pipelines.definitions import build_definitions

    prefix = f"d_{uuid.uuid4().hex[:6]}"
    engines = {}
    for name in TARGETS:
        engines[name] = sa.create_engine(embedded_url(f"{prefix}_{name}"))
        load_events(engines[name], old=300 + 40 * TARGETS.index(name), new=100)
    before = {name: ids(e, "events") for name, e in engines.items()}
    keep = {name: ids(e, "events", "created_at >= now() - interval '7 days'") for name, e in engines.items()}
    policies = tmp_path / "policies"
    policies.mkdir()
    listed = ", ".join(f'{{ name = "{n}", database = "{prefix}_{n}" }}' for n in TARGETS)
    write_policy(policies, RETENTION.format(table="events", batch_size=200, extra=""), "unused",
                 env_block=f'env.dev = {{ url = "embedded", targets = [{listed}] }}')
    write_policy(policies, RENAMED, f"{prefix}_renamed", name="renamed")
    defs = build_definitions(str(policies))
    keys = [dg.AssetKey(["testpol", "purge", leaf]) for leaf in ("profile", "apply", "verified")]
    real = {"ops": {"testpol__purge__apply": {"config": {"dry_run": False}}}}

    with webhook() as (url, posted), deployment(tmp_path, policies, MAX_RUNS, {"DBSWEEP_WEBHOOK_URL": url}) as deployed:
        started = deployed.dagster("schedule", "start", "renamed__check__schedule")
        assert started.returncode == 0, started.stdout + started.stderr
        with deployed.instance() as instance:
            backfills = [launch_asset_backfill(instance, defs, keys, TARGETS, real) for _ in range(2)]
            states = wait_for("both backfills end", lambda: ended_backfills(instance, backfills), deployed)
            spans = run_spans(instance, backfills)

            def scheduled_failure():
                runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/schedule_name": "renamed__check__schedule"}))
                failed = {r.run_id for r in runs if r.status == dg.DagsterRunStatus.FAILURE}
                return [m for m in posted if m.get("dbsweep", {}).get("run_id") in failed]

            alerts = wait_for("the scheduled run fails and its failure is posted", scheduled_failure, deployed)

    print("\n" + timeline(spans))  # the closing note's concurrency timeline (pytest -s)
    assert states == ["COMPLETED_SUCCESS", "COMPLETED_SUCCESS"], (states, timeline(spans))
    assert len(spans) == 2 * len(TARGETS) and all(s.status == "SUCCESS" for s in spans), timeline(spans)
    assert sorted(s.partition for s in spans) == sorted(TARGETS * 2)
    assert not overlaps_per_partition(spans), timeline(spans)
    assert 2 <= peak_concurrency(spans) <= MAX_RUNS, timeline(spans)
    for name, engine in engines.items():
        assert ids(engine, "events") == keep[name], name
        with engine.connect() as conn:
            runs = conn.execute(sa.text("SELECT state, rows_done FROM dbsweep.runs WHERE phase = 'purge'")).all()
        assert sorted(runs) == [("finished", 0), ("finished", len(before[name] - keep[name]))], (name, runs)
        engine.dispose()
    alert = alerts[0]
    assert alert["dbsweep"]["event"] == "run_failed" and alert["dbsweep"]["job"] == "renamed__check"
    assert "readings_renamed_since" in alert["text"], alert["text"]
