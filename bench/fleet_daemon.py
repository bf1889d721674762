"""A fleet phase under the Dagster daemon, against the same fleet through the CLI.

    python bench/fleet_daemon.py [--databases 10] [--rows 200000] [--max-runs 4]

Each database gets a fresh events table of --rows rows, half of them older than the 7-day cutoff,
before every method. Then:
  - `dbsweep run --all-targets --parallel N` (N = --max-runs): one process per target;
  - a backfill of the phase's graph over every target partition, carried out by `dagster-daemon run`
    on dagster-postgres storage with the queued run coordinator at `max_concurrent_runs = N`, one
    run per partition at a time (the deployment `dbsweep ui` writes; tests/daemon.py builds it).
The daemon's wall time runs from the backfill request to its end, as an operator waits for it;
the run spans come from Dagster's run storage. What the daemon adds over the CLI is its ticks
(the backfill and queue daemons poll) and a run worker process per run that imports Dagster and
the code location before the phase starts."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fleet import PHASE, PREFIX, cli, fresh  # noqa: E402

from tests.daemon import (  # noqa: E402
    deployment,
    ended_backfills,
    launch_asset_backfill,
    overlaps_per_partition,
    peak_concurrency,
    run_spans,
    timeline,
    wait_for,
)

POLICY = """
[policy]
name = "fleet_daemon_bench"
[database]
default_env = "dev"
env.dev = {{ url = "embedded", targets = [{targets}] }}
""" + PHASE


def daemon_backfill(folder: Path, policies: Path, names: list[str], max_runs: int):
    import dagster as dg

    from pipelines.definitions import build_definitions

    defs = build_definitions(str(policies))
    keys = [dg.AssetKey(["fleet_daemon_bench", "events", leaf]) for leaf in ("profile", "apply", "verified")]
    real = {"ops": {"fleet_daemon_bench__events__apply": {"config": {"dry_run": False}}}}
    began = time.perf_counter()
    with deployment(folder, policies, max_runs) as deployed:
        started = time.perf_counter()
        with deployed.instance() as instance:
            requested_at = time.time()
            backfill = launch_asset_backfill(instance, defs, keys, names, real)
            states = wait_for("the backfill ends", lambda: ended_backfills(instance, [backfill]), deployed,
                              timeout_s=3600)
            wall = time.perf_counter() - started
            spans = run_spans(instance, [backfill])
    stopped = time.perf_counter() - began
    if states != ["COMPLETED_SUCCESS"] or any(s.status != "SUCCESS" for s in spans):
        raise SystemExit(f"the backfill did not succeed: {states}\n{timeline(spans)}")
    if overlaps_per_partition(spans):
        raise SystemExit(f"two runs overlapped on one database\n{timeline(spans)}")
    return wall, stopped, requested_at, spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", type=int, default=10)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--max-runs", type=int, default=4)
    args = parser.parse_args()
    out = Console(width=160)
    folder = Path(tempfile.mkdtemp())
    policies = folder / "policies"
    policies.mkdir()
    names = [f"{PREFIX}{i:02d}" for i in range(1, args.databases + 1)]
    listed = ", ".join(f'{{ name = "{n}", database = "{n}" }}' for n in names)
    path = policies / "fleet_daemon_bench.toml"
    path.write_text(POLICY.format(targets=listed))

    out.print(f"{args.databases} databases of {args.rows:,} rows ...")
    fresh(args.databases, args.rows)
    cli_wall = cli("run", str(path), "--all-targets", "--parallel", str(args.max_runs))
    fresh(args.databases, args.rows)
    wall, with_start_stop, requested_at, spans = daemon_backfill(folder, policies, names, args.max_runs)

    in_runs = [s.end - s.start for s in spans]
    first_start = min(s.start for s in spans)
    last_end = max(s.end for s in spans)
    table = Table(title=f"{args.databases} databases x {args.rows:,} rows, half purged, at most {args.max_runs} at once")
    for column in ("method", "wall s", "× CLI"):
        table.add_column(column, justify="left" if column == "method" else "right")
    table.add_row(f"dbsweep run --all-targets --parallel {args.max_runs}", f"{cli_wall:.1f}", "1.00")
    table.add_row("daemon backfill: request to end", f"{wall:.1f}", f"{wall / cli_wall:.2f}")
    table.add_row("daemon backfill: first run start to last run end", f"{last_end - first_start:.1f}",
                  f"{(last_end - first_start) / cli_wall:.2f}")
    table.add_row("daemon backfill: with the daemon's start and stop", f"{with_start_stop:.1f}",
                  f"{with_start_stop / cli_wall:.2f}")
    out.print(table)
    out.print(f"runs: {len(spans)}, peak concurrency {peak_concurrency(spans)} (limit {args.max_runs}); "
              f"run seconds median {sorted(in_runs)[len(in_runs) // 2]:.1f}, max {max(in_runs):.1f}; "
              f"first run started {first_start - requested_at:.1f} s after the request")
    out.print(timeline(spans))


if __name__ == "__main__":
    main()
