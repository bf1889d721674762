"""A Dagster deployment on this machine, shaped as production runs one: Dagster's storage on
dagster-postgres (a database of the embedded server of its own), the queued run coordinator with
the limits `dbsweep ui` writes, the code location loaded from a workspace file, and
`dagster-daemon run` launching runs with the default run launcher. Used by tests/test_daemon.py
and bench/fleet_daemon.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from dbsweep.demo_run import dagster_settings, stop_process_group
from dbsweep.embedded import embedded_url, recreate_embedded_database

ROOT = Path(__file__).resolve().parents[1]
STORAGE_URL_ENV = "DBSWEEP_DAGSTER_STORAGE_URL"
ENDED = ("COMPLETED_SUCCESS", "COMPLETED_FAILED", "COMPLETED", "FAILED", "CANCELED")


@dataclass
class Deployment:
    home: Path
    workspace: Path
    env: dict[str, str]
    log: Path

    def instance(self):
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.home))

    def dagster(self, *args: str) -> subprocess.CompletedProcess:
        """The `dagster` CLI against this deployment (as an operator types it)."""
        return subprocess.run([str(Path(sys.executable).parent / "dagster"), *args, "-w", str(self.workspace)],
                              env=self.env, cwd=self.home, capture_output=True, text=True, timeout=300)

    def daemon_log(self, last: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-last:]


@contextmanager
def deployment(folder: Path, policy_dir: Path, max_runs: int = 4, extra_env: dict | None = None):
    """Starts the daemon; stops it and every process it started when the block ends. The test
    process gets the storage URL in its own environment too, so `instance()` reads the same
    storage the daemon writes."""
    storage = f"dagster_{uuid.uuid4().hex[:8]}"
    recreate_embedded_database(storage)
    url = embedded_url(storage).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    home = folder / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(dagster_settings("postgres", STORAGE_URL_ENV, max_runs=max_runs))
    workspace = folder / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module:\n      module_name: pipelines.definitions\n"
                         f"      working_directory: {ROOT}\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), STORAGE_URL_ENV: url, "DBSWEEP_POLICY_DIR": str(policy_dir),
           **(extra_env or {})}
    before = os.environ.get(STORAGE_URL_ENV)
    os.environ[STORAGE_URL_ENV] = url
    log = folder / "daemon.log"
    with open(log, "w") as sink:
        daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
                                  env=env, cwd=home, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield Deployment(home, workspace, env, log)
    finally:
        stop_process_group(daemon, grace_s=60, linger_s=20)
        if before is None:
            os.environ.pop(STORAGE_URL_ENV, None)
        else:
            os.environ[STORAGE_URL_ENV] = before
        engine = sa.create_engine(embedded_url("postgres"), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{storage}" WITH (FORCE)'))
        engine.dispose()


def launch_asset_backfill(instance, defs, keys, partitions: list[str], run_config: dict) -> str:
    """What the UI's "Launch backfill" does: a backfill request the daemon carries out."""
    from dagster._core.execution.backfill import PartitionBackfill

    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=f"b{uuid.uuid4().hex[:8]}", asset_graph=defs.get_repository_def().asset_graph,
        partition_names=partitions, asset_selection=keys, backfill_timestamp=time.time(), tags={},
        dynamic_partitions_store=instance, all_partitions=False, title=None, description=None, run_config=run_config)
    instance.add_backfill(backfill)
    return backfill.backfill_id


def ended_backfills(instance, backfill_ids: list[str]) -> list[str] | None:
    """Each backfill's status once every one has ended, else None."""
    states = [instance.get_backfill(b).status.value for b in backfill_ids]
    return states if all(s in ENDED for s in states) else None


def wait_for(what: str, condition, deployment: Deployment, timeout_s: float = 600, every_s: float = 1.0):
    """`condition()` until it returns something true, or fail with the daemon's log."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s\n{deployment.daemon_log()}"
        time.sleep(every_s)


@dataclass(frozen=True)
class RunSpan:
    run_id: str
    partition: str
    backfill: str
    status: str
    start: float
    end: float


def run_spans(instance, backfill_ids: list[str]) -> list[RunSpan]:
    import dagster as dg

    spans = []
    for backfill_id in backfill_ids:
        for record in instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id})):
            run = record.dagster_run
            spans.append(RunSpan(run.run_id, run.tags.get("dagster/partition", ""), backfill_id, run.status.value,
                                 record.start_time or 0.0, record.end_time or 0.0))
    return sorted(spans, key=lambda s: s.start)


def peak_concurrency(spans: list[RunSpan]) -> int:
    """Most runs between their start and end at one instant (an end before a start at a tie)."""
    events = sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def overlaps_per_partition(spans: list[RunSpan]) -> list[tuple[RunSpan, RunSpan]]:
    """Pairs of runs on one partition (one database) whose times overlap."""
    found = []
    by_partition: dict[str, list[RunSpan]] = {}
    for span in spans:
        by_partition.setdefault(span.partition, []).append(span)
    for runs in by_partition.values():
        runs.sort(key=lambda s: s.start)
        found += [(a, b) for a, b in zip(runs, runs[1:]) if b.start < a.end]
    return found


def timeline(spans: list[RunSpan], width: int = 60) -> str:
    """One line per run: partition, backfill, seconds from the first start, and a bar."""
    if not spans:
        return "(no runs)"
    first, last = min(s.start for s in spans), max(s.end for s in spans)
    scale = width / max(last - first, 1e-9)
    lines = []
    for span in spans:
        left, right = int((span.start - first) * scale), max(int((span.end - first) * scale), int((span.start - first) * scale) + 1)
        lines.append(f"{span.partition:>10} {span.backfill:<10} {span.start - first:6.1f}–{span.end - first:6.1f} s "
                     f"{' ' * left}{'█' * (right - left)}")
    return "\n".join(lines)
