"""One policy, many databases (the CLI side of a fleet): targets listed or discovered on a server,
--target, --all-targets with --parallel, one bad target reported while the others go on."""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from dbsweep.embedded import embedded_url
from tests.conftest import ids, load_events, run_cli, write_policy
from tests.helpers import free_port, scrape
from tests.test_stats_metrics import _analyzed

NEW = "created_at >= now() - interval '7 days'"
PHASES = """
[[phase]]
name = "events"
kind = "retention"
table = "events"
time_column = "created_at"
older_than = "7 days"
batch_size = 500

[[phase]]
name = "seen"
kind = "retention"
table = "seen"
time_column = "created_at"
older_than = "7 days"
batch_size = 500
"""


def fleet_db(prefix: str, name: str, old: int, new: int) -> sa.Engine:
    engine = sa.create_engine(embedded_url(f"{prefix}_{name}"))
    load_events(engine, old, new)
    load_events(engine, old // 2, new // 2, table="seen")
    return engine


def test_all_targets_in_parallel_and_one_unreachable(tmp_path):
    prefix = f"f_{uuid.uuid4().hex[:6]}"
    engines = {name: fleet_db(prefix, name, old, new) for name, old, new in (("a", 3000, 1000), ("b", 1500, 500),
                                                                            ("c", 600, 400))}
    keep = {name: (ids(e, "events", NEW), ids(e, "seen", NEW)) for name, e in engines.items()}
    targets = ", ".join(f'{{ name = "{n}", database = "{prefix}_{n}" }}' for n in engines)
    env = (f'env.dev = {{ url = "embedded", targets = [{targets}, '
           '{ name = "down", url = "postgresql://nobody:secret@127.0.0.1:1/gone" }] }')
    path = write_policy(tmp_path, PHASES, "unused", env_block=env)
    done = run_cli("run", path, "--all-targets", "--parallel", "3")
    assert done.returncode == 1, done.stdout + done.stderr  # the worst: the unreachable target failed
    summary = done.stdout
    assert "fleet summary (4 targets, --parallel 3)" in summary and "secret" not in summary + done.stderr
    lines = done.stderr.strip().splitlines()  # the exit code's reason, one line
    assert len(lines) == 1 and lines[0].startswith("dbsweep: 1 of 4 targets did not finish: down (exit 1: "), lines
    for name in ("a", "b", "c"):
        assert f"│ {name} " in summary
    assert "│ down " in summary and "failed" in summary
    logs = sorted(Path(os.environ["DBSWEEP_HOME"]).glob("fleet/testpol-*/down.log"))
    assert logs and "cannot connect" in logs[-1].read_text() and "secret" not in logs[-1].read_text()
    for name, engine in engines.items():  # each database purged exactly, whatever the others did
        assert (ids(engine, "events"), ids(engine, "seen")) == keep[name], summary
        with engine.connect() as conn:
            runs = conn.execute(sa.text("SELECT phase, started_at, finished_at FROM dbsweep.runs ORDER BY started_at")).all()
        assert [r.phase for r in runs] == ["events", "seen"]
        assert runs[0].finished_at <= runs[1].started_at  # never two phases on one database at once
    alone = run_cli("status", path, "--target", "b")
    assert alone.returncode == 0 and "target b" in alone.stdout
    numbers = run_cli("stats", path, "--target", "c")
    assert numbers.returncode == 0 and "events" in numbers.stdout, numbers.stdout + numbers.stderr
    every = run_cli("stats", path, "--all-targets")
    assert every.returncode == 1 and "fleet summary (4 targets" in every.stdout and "│ down " in every.stdout
    with engines["c"].connect() as conn:  # restore searches the targets for the run; an unreachable one is named
        run_c = conn.execute(sa.text("SELECT run_id FROM dbsweep.runs WHERE phase = 'events'")).scalar()
    found = run_cli("restore", run_c, "--policy", path)
    assert found.returncode == 2 and "recorded no archive" in found.stderr, found.stderr  # found; nothing to put back
    nowhere = run_cli("restore", "0" * 32, "--policy", path)
    assert nowhere.returncode == 2 and "not searched, unreachable: target down" in nowhere.stderr, nowhere.stderr
    assert "secret" not in nowhere.stderr + found.stderr
    for engine in engines.values():
        engine.dispose()


def test_metrics_of_a_fleet_name_each_target_and_one_down_hides_no_other(tmp_path, capsys):
    from dbsweep.metrics import serve
    from dbsweep.policy import load_policy

    prefix = f"m_{uuid.uuid4().hex[:6]}"
    engines = {name: fleet_db(prefix, name, 400, 100) for name in ("p", "q")}
    targets = ", ".join(f'{{ name = "{n}", database = "{prefix}_{n}" }}' for n in engines)
    env = (f'env.dev = {{ url = "embedded", targets = [{targets}, '
           '{ name = "down", url = "postgresql://nobody:secret@127.0.0.1:1/gone" }] }')
    path = write_policy(tmp_path, PHASES, "unused", env_block=env)
    before = {name: len(ids(e, "events")) for name, e in engines.items()}
    assert run_cli("run", path, "--target", "p", "--phase", "events").returncode == 0
    purged = before["p"] - len(ids(engines["p"], "events"))
    for engine in engines.values():
        _analyzed(engine)  # the exporter serves the statistics' row counts
    port = free_port()
    server, thread = serve(load_policy(path), None, "127.0.0.1", port)
    try:
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        thread.join(timeout=10)
    up = {dict(labels)["target"]: value for (name, labels), value in samples.items() if name == "dbsweep_target_up"}
    assert up == {"p": 1, "q": 1, "down": 0}
    rows = {dict(labels)["target"]: value for (name, labels), value in samples.items()
            if name == "dbsweep_table_rows" and dict(labels)["table"] == "events"}
    assert rows == {"p": before["p"] - purged, "q": before["q"]}
    changed = {dict(labels)["target"]: value for (name, labels), value in samples.items()
               if name == "dbsweep_rows_changed_total"}
    assert changed == {"p": purged} and purged > 0
    said = capsys.readouterr().err
    assert "target down" in said and "cannot connect" in said and "secret" not in said
    for engine in engines.values():
        engine.dispose()


def test_sigterm_stops_the_running_target_and_starts_no_waiting_one(tmp_path):
    """SIGTERM to `run --all-targets` (a service manager's stop): the target running finishes its
    batch and stops resumable, the waiting targets never start, and no process is left."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    prefix = f"t_{uuid.uuid4().hex[:6]}"
    engines = {name: fleet_db(prefix, name, 3000, 500) for name in ("a", "b", "c")}
    before = {name: (ids(e, "events"), ids(e, "seen")) for name, e in engines.items()}
    keep_a = ids(engines["a"], "events", NEW)
    targets = ", ".join(f'{{ name = "{n}", database = "{prefix}_{n}" }}' for n in engines)
    path = write_policy(tmp_path, PHASES.replace("batch_size = 500", "batch_size = 100\nsleep_ms = 200"), "unused",
                        env_block=f'env.dev = {{ url = "embedded", targets = [{targets}] }}')
    fleet = subprocess.Popen([sys.executable, "-m", "dbsweep.cli", "run", str(path), "--all-targets", "--parallel", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _batches_done(engines["a"]) < 2:
            assert fleet.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        fleet.send_signal(signal.SIGTERM)
        out, err = fleet.communicate(timeout=120)
    assert fleet.returncode == 4, out + err
    assert "stopped" in out and out.count("skipped") == 2 and "interrupted" in out, out
    with engines["a"].connect() as conn:
        states = conn.execute(sa.text("SELECT state FROM dbsweep.runs")).scalars().all()
    assert states == ["stopped"]
    assert keep_a <= ids(engines["a"], "events") < before["a"][0]  # part done, nothing it should keep lost
    for name in ("b", "c"):  # never started: not a row changed, no ledger
        assert (ids(engines[name], "events"), ids(engines[name], "seen")) == before[name]
        assert _batches_done(engines[name]) == 0
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(path) in " ".join(p.info["cmdline"] or [])]
    for engine in engines.values():
        engine.dispose()


def _batches_done(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regclass('dbsweep.batches')")).scalar() is None:
            return 0
        return conn.execute(sa.text("SELECT count(*) FROM dbsweep.batches")).scalar()


def test_one_target_unknown_target_and_a_fleet_without_either(tmp_path):
    prefix = f"f_{uuid.uuid4().hex[:6]}"
    engines = {name: fleet_db(prefix, name, 800, 200) for name in ("east", "west")}
    before = {name: ids(e, "events") for name, e in engines.items()}
    targets = ", ".join(f'{{ name = "{n}", database = "{prefix}_{n}" }}' for n in engines)
    path = write_policy(tmp_path, PHASES, "unused", env_block=f'env.dev = {{ url = "embedded", targets = [{targets}] }}')
    one = run_cli("run", path, "--target", "west", "--phase", "events")
    assert one.returncode == 0, one.stderr
    assert ids(engines["west"], "events") == ids(engines["west"], "events", NEW)
    assert ids(engines["east"], "events") == before["east"]  # the other target untouched
    wrong = run_cli("run", path, "--target", "wets")
    assert wrong.returncode == 2 and "no target 'wets'; did you mean 'west'?" in wrong.stderr
    neither = run_cli("plan", path)
    assert neither.returncode == 2 and "is a fleet of databases: give --target NAME or --all-targets" in neither.stderr
    for engine in engines.values():
        engine.dispose()


def test_discovered_targets_pick_up_a_database_created_later(tmp_path):
    prefix = f"d_{uuid.uuid4().hex[:6]}"
    first = [fleet_db(prefix, n, 300, 100) for n in ("1", "2")]
    env = f'env.dev = {{ url = "embedded", databases_like = "{prefix}\\\\_%" }}'
    path = write_policy(tmp_path, PHASES, "unused", env_block=env)
    planned = run_cli("plan", path, "--all-targets", "--parallel", "2", "-o", tmp_path / "plan.json")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "fleet summary (2 targets" in planned.stdout
    assert sorted(p.name for p in tmp_path.glob("plan.*.json")) == [f"plan.{prefix}_1.json", f"plan.{prefix}_2.json"]
    later = fleet_db(prefix, "3", 300, 100)
    again = run_cli("check", path, "--all-targets")
    assert again.returncode == 0 and "fleet summary (3 targets" in again.stdout and f"{prefix}_3" in again.stdout
    for engine in [*first, later]:
        engine.dispose()


def test_bad_fleet_policies_are_one_line_and_exit_2(tmp_path):
    cases = [('env.dev = { url = "embedded", targets = [{ name = "a", database = "x" }, { name = "a", database = "y" }] }',
              "'a' is named twice"),
             ('env.dev = { url = "embedded", targets = [] }', "targets: empty"),
             ('env.dev = { url = "embedded", targets = [{ name = "a" }] }', "give exactly one of 'url', 'url_env' or 'database'"),
             ('env.dev = { url = "embedded", databases_like = "x%", targets = [{ name = "a", database = "x" }] }',
              "not both")]
    for env, message in cases:
        path = write_policy(tmp_path, PHASES, "unused", env_block=env)
        result = run_cli("plan", path, "--all-targets")
        assert result.returncode == 2 and message in result.stderr, (env, result.stderr)


def test_dagster_partitions_by_target_each_materialized_once(tmp_path):
    """A listed fleet: each phase's graph, and the policy's health, statistics and integrity, are
    partitioned by target; materializing each partition works on that database only, the ledger
    of each shows one run per phase, the purpose schedules ask for one run per target, and a run
    is restored on its own target (by the Dagster job given the target, or by the CLI, which finds
    the target whose ledger holds it)."""
    import dagster as dg

    from pipelines.definitions import build_definitions

    prefix = f"g_{uuid.uuid4().hex[:6]}"
    engines = {name: fleet_db(prefix, name, 900, 300) for name in ("one", "two")}
    before = {name: ids(e, "events") for name, e in engines.items()}
    keep = {name: ids(e, "events", NEW) for name, e in engines.items()}
    targets = ", ".join(f'{{ name = "{n}", database = "{prefix}_{n}" }}' for n in engines)
    body = PHASES.replace('batch_size = 500\n', 'batch_size = 500\nschedule = "0 3 * * *"\narchive = "table"\n', 1)
    path = write_policy(tmp_path, body + '\n[schedules]\ncheck = "0 * * * *"\nintegrity = "0 5 * * 0"\n', "unused",
                        env_block=f'env.dev = {{ url = "embedded", targets = [{targets}] }}')
    defs = build_definitions(str(tmp_path))
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("testpol__events")
    assert sorted(job.partitions_def.get_partition_keys()) == ["one", "two"]
    instance = dg.DagsterInstance.ephemeral()
    for name in ("testpol__events__schedule", "testpol__check__schedule", "testpol__integrity_report__schedule"):
        schedule = defs.resolve_schedule_def(name)  # one run per target at each tick
        ticks = schedule.evaluate_tick(dg.build_schedule_context(instance=instance,
                                                                 scheduled_execution_time=datetime(2026, 11, 29, 5),
                                                                 repository_def=defs.get_repository_def()))
        assert sorted(r.partition_key for r in ticks.run_requests) == ["one", "two"], name
    assets = list(defs.assets) + list(defs.asset_checks)
    for name in ("one", "two"):
        result = dg.materialize(assets, selection=dg.AssetSelection.groups("testpol_events"), instance=instance,
                                partition_key=name, resources=defs.resources,
                                run_config={"ops": {"testpol__events__apply": {"config": {"dry_run": False}}}})
        assert result.success
    for name, engine in engines.items():
        assert ids(engine, "events") == keep[name]
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM dbsweep.runs WHERE phase = 'events'")).scalar() == 1
    done = instance.get_materialized_partitions(dg.AssetKey(["testpol", "events", "verified"]))
    assert done == {"one", "two"}  # what the UI shows as the targets done

    report = dg.materialize(assets, selection=dg.AssetSelection.groups("testpol_health"), instance=instance,
                            partition_key="two", resources=defs.resources)
    assert report.success
    checks = {e.check_name: e.passed for e in report.get_asset_check_evaluations()}
    assert checks["verified_events"] and checks["no_problems"], checks
    metadata = {e.asset_key.path[-1]: e.materialization.metadata for e in report.get_asset_materialization_events()}
    assert metadata["stats"]["events/runs"].value == 1 and metadata["stats"]["events/rows_changed"].value == len(before["two"] - keep["two"])
    assert f"{prefix}_two" in metadata["health"]["target"].value

    with engines["two"].connect() as conn:
        run_two = conn.execute(sa.text("SELECT run_id FROM dbsweep.runs WHERE phase = 'events'")).scalar()
    restore = defs.resolve_job_def("testpol__restore")
    unsaid = restore.execute_in_process(instance=instance, raise_on_error=False,
                                        run_config={"ops": {"testpol__restore_run": {"config": {"run_id": run_two}}}})
    assert not unsaid.success and ids(engines["two"], "events") == keep["two"]
    put_back = restore.execute_in_process(instance=instance, run_config={
        "ops": {"testpol__restore_run": {"config": {"run_id": run_two, "target": "two"}}}})
    assert put_back.success and ids(engines["two"], "events") == before["two"]
    assert ids(engines["one"], "events") == keep["one"]  # the other target untouched

    with engines["one"].connect() as conn:
        run_one = conn.execute(sa.text("SELECT run_id FROM dbsweep.runs WHERE phase = 'events'")).scalar()
    wrong = run_cli("restore", run_one, "--policy", path, "--target", "two")
    assert wrong.returncode == 2 and "is not in the ledger" in wrong.stderr and ids(engines["one"], "events") == keep["one"]
    found = run_cli("restore", run_one, "--policy", path)  # no --target: the target whose ledger holds the run
    assert found.returncode == 0, found.stdout + found.stderr
    assert ids(engines["one"], "events") == before["one"]
    for engine in engines.values():
        engine.dispose()


def test_dagster_sensor_adds_a_database_created_after_the_first_run(tmp_path):
    import dagster as dg

    from pipelines.definitions import build_definitions

    prefix = f"h_{uuid.uuid4().hex[:6]}"
    first = fleet_db(prefix, "1", 200, 100)
    write_policy(tmp_path, PHASES, "unused", env_block=f'env.dev = {{ url = "embedded", databases_like = "{prefix}\\\\_%" }}')
    defs = build_definitions(str(tmp_path))
    sensor = defs.resolve_sensor_def("testpol__targets")
    instance = dg.DagsterInstance.ephemeral()

    def tick():
        result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return sorted(instance.get_dynamic_partitions("testpol__targets"))

    assert tick() == [f"{prefix}_1"]
    later = fleet_db(prefix, "2", 200, 100)
    assert tick() == [f"{prefix}_1", f"{prefix}_2"]
    for engine in (first, later):
        engine.dispose()


def test_dagster_storage_on_postgres_records_runs_events_and_backfills(tmp_path, monkeypatch):
    """`dbsweep ui --storage postgres` writes this dagster.yaml: Dagster's runs, events and
    backfills then live in the embedded server's `dagster` database, through dagster-postgres."""
    import time

    import dagster as dg
    from dagster._core.execution.backfill import PartitionBackfill

    from dbsweep.demo_run import dagster_settings
    from pipelines.definitions import build_definitions

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(dagster_settings("postgres"))
    prefix = f"s_{uuid.uuid4().hex[:6]}"
    engines = {name: fleet_db(prefix, name, 300, 100) for name in ("x", "y")}
    targets = ", ".join(f'{{ name = "{n}", database = "{prefix}_{n}" }}' for n in engines)
    write_policy(tmp_path, PHASES, "unused", env_block=f'env.dev = {{ url = "embedded", targets = [{targets}] }}')
    defs = build_definitions(str(tmp_path))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize(list(defs.assets) + list(defs.asset_checks), selection=dg.AssetSelection.groups("testpol_events"),
                                instance=instance, partition_key="x", resources=defs.resources)
        assert result.success
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id=f"b{uuid.uuid4().hex[:8]}", asset_graph=defs.get_repository_def().asset_graph,
            partition_names=["x", "y"], asset_selection=[dg.AssetKey(["testpol", "events", "profile"])],
            backfill_timestamp=time.time(), tags={}, dynamic_partitions_store=instance, all_partitions=False,
            title=None, description=None, run_config=None)
        instance.add_backfill(backfill)
        assert instance.get_backfill(backfill.backfill_id) is not None
        queue = instance.get_concurrency_config().run_queue_config  # one run per target, 4 in all
        assert queue.max_concurrent_runs == 4
        assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in \
            queue.tag_concurrency_limits
    dagster_db = sa.create_engine(embedded_url("dagster"))
    with dagster_db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM runs WHERE run_id = :r"), {"r": result.run_id}).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM event_logs WHERE run_id = :r"), {"r": result.run_id}).scalar() > 10
        assert conn.execute(sa.text("SELECT count(*) FROM bulk_actions WHERE key = :k"),
                            {"k": backfill.backfill_id}).scalar() == 1
    dagster_db.dispose()
    for engine in engines.values():
        engine.dispose()


def test_demo_fleet_runs_every_database_and_shows_the_summary():
    done = run_cli("demo", "--fleet", "2", "--scale", "0.05")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fleet summary (2 targets, --parallel 2)" in done.stdout
    assert done.stdout.count("│ done ") == 2


def test_a_fleet_backfill_is_partitioned_by_target_and_window(tmp_path):
    """A retention phase with `backfill` in a fleet: partitions are target x day; materializing
    one (target, day) purges that day's old rows in that database only."""
    from datetime import timedelta

    import dagster as dg

    from dbsweep.plan import utcnow
    from pipelines.definitions import build_definitions

    prefix = f"m_{uuid.uuid4().hex[:6]}"
    engines = {name: fleet_db(prefix, name, 3000, 1000) for name in ("p", "q")}
    day = (utcnow() - timedelta(days=14)).date()
    start = f"'{day.isoformat()} 00:00:00+00'"
    in_day = f"created_at >= timestamptz {start} AND created_at < timestamptz {start} + interval '1 day'"
    before = {name: ids(e, "events") for name, e in engines.items()}
    doomed = ids(engines["p"], "events", in_day)
    assert doomed
    targets = ", ".join(f'{{ name = "{n}", database = "{prefix}_{n}" }}' for n in engines)
    phases = PHASES.replace('batch_size = 500\n', f'batch_size = 500\nbackfill = {{ start = '
                            f'{(day - timedelta(days=30)).isoformat()}, window = "day" }}\n', 1)
    write_policy(tmp_path, phases, "unused", env_block=f'env.dev = {{ url = "embedded", targets = [{targets}] }}')
    defs = build_definitions(str(tmp_path))
    partitions = defs.resolve_job_def("testpol__events__backfill").partitions_def
    assert isinstance(partitions, dg.MultiPartitionsDefinition)
    assert {d.name for d in partitions.partitions_defs} == {"target", "window"}
    key = dg.MultiPartitionKey({"target": "p", "window": day.isoformat()})
    result = dg.materialize(list(defs.assets) + list(defs.asset_checks), instance=dg.DagsterInstance.ephemeral(),
                            selection=dg.AssetSelection.groups("testpol_events_backfill"), partition_key=key,
                            resources=defs.resources,
                            run_config={"ops": {"testpol__events__backfill__apply": {"config": {"dry_run": False}}}})
    assert result.success
    assert ids(engines["p"], "events") == before["p"] - doomed  # that day, that database
    assert ids(engines["q"], "events") == before["q"]  # the other target untouched
    for engine in engines.values():
        engine.dispose()


def test_fail_fast_starts_no_target_after_a_failure(tmp_path):
    prefix = f"ff_{uuid.uuid4().hex[:6]}"
    engine = fleet_db(prefix, "later", 300, 100)
    before = ids(engine, "events")
    env = ('env.dev = { url = "embedded", targets = [{ name = "down", url = "postgresql://nobody@127.0.0.1:1/gone" }, '
           f'{{ name = "later", database = "{prefix}_later" }}] }}')
    path = write_policy(tmp_path, PHASES, "unused", env_block=env)
    done = run_cli("run", path, "--all-targets", "--fail-fast")
    assert done.returncode == 1 and "skipped (--fail-fast)" in done.stdout, done.stdout
    assert ids(engine, "events") == before  # the target after the failure never started
    engine.dispose()
