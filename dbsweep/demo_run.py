"""`dbsweep demo` and `dbsweep ui`: the embedded PostgreSQL, sample data, the whole workflow."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import service
from .demo import DATASETS
from .embedded import dagster_home, dbsweep_home, recreate_embedded_database
from .errors import BadInput, DbsweepError
from .policy import load_policy
from .target import connect

REPO = Path(__file__).resolve().parents[1]


def find_file(relative: str) -> Path:
    for base in (Path.cwd(), REPO):
        if (base / relative).exists():
            return base / relative
    raise BadInput(f"cannot find {relative} (run from the dbsweep checkout)")


def run_demo(out: Console, scale: float, load_only: bool = False) -> None:
    """Load every demo policy's data into a freshly created embedded database (its ledger, archives
    and retired copies go with the old one), then, unless `load_only`, run each phase through."""
    from expectations.runner import gate, verification

    from .kinds import kind_named

    summary = summary_table(scale)
    for dataset_name, dataset in DATASETS.items():
        policy = load_policy(find_file(f"policies/{dataset_name}.toml"))
        if policy.database.env["dev"].url != "embedded":
            raise BadInput(f"{policy.path}: the demo only writes to the embedded database (env dev)")
        database = policy.database.env["dev"].database or policy.database.database_name or policy.name
        recreate_embedded_database(database)
        shutil.rmtree(policy.archive_dir, ignore_errors=True)  # Parquet archives of the ledger just dropped
        target = connect(policy, "dev")
        out.print(f"[bold]{policy.name}[/]: loading sample data into {escape(target.display_url)} (a fresh database)")
        dataset.create(target.engine, scale)
        if load_only:
            continue
        for phase in policy.phases:
            started = time.monotonic()
            plan = service.make_plan(policy, phase.name, target)
            service.record_gate(target, plan, gate(plan))
            if not plan.gate.passed:
                raise DbsweepError(f"demo gate refused {phase.name}: {plan.gate.summary}")
            kind = kind_named(phase.kind)
            before = _rows(plan)
            actions = [f"{line.action}" for line in kind.dry_run(plan, None) if line.action]
            report = service.apply(policy, target, plan, dry_run=False)
            verdict = verification(plan, service.verify(target, plan))
            after = before if kind.changes_rows_in_place else before - report.rows
            waiting = [row["detail"] for row in plan.profile if row.get("due")]
            changed = "; ".join(actions + waiting) or f"{report.rows:,}"
            names = list(dict.fromkeys(row["table"] for row in plan.profile))
            tables = ", ".join(names) if len(names) <= 2 else f"{names[0]} + {len(names) - 1} children"
            summary.add_row(policy.name, phase.name, phase.kind, tables, f"{before:,}", f"{after:,}", changed,
                            f"{report.rows_per_s:,.0f}", f"{report.batches:,}", f"{report.batch_ms['max']:.0f} ms",
                            f"{report.seconds:.1f} s", f"{time.monotonic() - started:.1f} s",
                            "yes" if verdict.passed else "[red]NO[/]")
            if not verdict.passed:
                raise DbsweepError(f"demo verification failed for {phase.name}: {verdict.summary}")
    if load_only:
        out.print("sample data loaded, nothing planned or applied: start with "
                  "`dbsweep plan policies/telemetry.toml -o cutoff_report.json`")
        return
    out.print(summary)
    out.print("rows/s and apply: the batched change alone; total: plan, gate (Great Expectations), apply and verify")


FLEET_PREFIX = "telemetry_fleet_"


def fleet_policy(folder: Path, prefix: str = FLEET_PREFIX) -> Path:
    """policies/telemetry.toml with its dev env made a fleet: every embedded database named
    `<prefix>…`, discovered when a command runs."""
    text = find_file("policies/telemetry.toml").read_text()
    pattern = prefix.replace("_", "\\\\_") + "%"
    text = text.replace('name = "telemetry"', 'name = "telemetry_fleet"', 1).replace(
        'env.dev = { url = "embedded" }', f'env.dev = {{ url = "embedded", databases_like = "{pattern}" }}', 1)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "telemetry_fleet.toml"
    path.write_text(text)
    return path


def load_fleet(size: int, scale: float, prefix: str = FLEET_PREFIX) -> list[str]:
    """`size` fresh embedded databases shaped like seed 002's telemetry, of different sizes."""
    from .demo import telemetry
    from .embedded import embedded_url

    names = []
    for i in range(1, size + 1):
        name = f"{prefix}{i:02d}"
        recreate_embedded_database(name)
        engine = sa.create_engine(embedded_url(name))
        try:
            telemetry.create(engine, scale * (0.25 + 1.5 * i / size))
        finally:
            engine.dispose()
        names.append(name)
    return names


def run_fleet_demo(out: Console, size: int, scale: float, parallel: int = 2) -> int:
    """`dbsweep demo --fleet N`: N telemetry databases, then the whole fleet through the CLI
    (`dbsweep run … --all-targets --parallel`), and the summary table."""
    from .fleet import run_fleet

    out.print(f"loading {size} telemetry databases ({FLEET_PREFIX}01 …) into the embedded server")
    names = load_fleet(size, scale)
    path = fleet_policy(dbsweep_home() / "fleet_demo")
    out.print(f"running {path} on every target, {parallel} at a time:\n"
              f"  dbsweep run {path} --all-targets --parallel {parallel}")
    logs = dbsweep_home() / "fleet" / f"demo-{time.strftime('%Y%m%dT%H%M%S')}"
    return run_fleet(out, ["run", str(path)], names, parallel, False, logs)


def _rows(plan) -> int:
    """Rows of the phase's tables (a reset profiles one table once per rule)."""
    return sum({row["table"]: row.get("rows_total") or 0 for row in plan.profile}.values())


DAGSTER_DATABASE = "dagster"


def dagster_settings(storage: str = "sqlite", storage_url_env: str | None = None, max_runs: int = 4) -> str:
    """The dagster.yaml `dbsweep ui` writes. Each policy's assets share a concurrency pool (one step
    at a time per database: a backfill's runs queue instead of failing on the phase lock); a fleet's
    runs queue with at most one per target (the partition) and `max_runs` in all; no newsletter
    dialog, no usage telemetry. `storage = "postgres"`: runs, events, schedules and backfills in
    PostgreSQL through dagster-postgres: the embedded server's `dagster` database, or the URL in
    the environment variable `storage_url_env` (read by Dagster; the file never holds a password).
    That is what a production deployment with a real run launcher and many workers uses."""
    def one_per_value() -> dict:
        return {"value": {"applyLimitPerUniqueValue": True}, "limit": 1}

    settings: dict = {
        "concurrency": {"pools": {"default_limit": 1},
                        "runs": {"max_concurrent_runs": max_runs, "tag_concurrency_limits": [
                            {"key": "dagster/partition", **one_per_value()},
                            {"key": "dagster/partition/target", **one_per_value()}]}},
        "nux": {"enabled": False}, "telemetry": {"enabled": False},
    }
    if storage == "postgres":
        if storage_url_env is not None:
            if not ENV_NAME.match(storage_url_env):
                raise BadInput(f"--storage-url-env {storage_url_env!r}: the name of an environment variable "
                               "(letters, digits, '_'), not a value")
            url: object = {"env": storage_url_env}
        else:
            from .embedded import embedded_url

            # a socket, no password; psycopg2: dagster-postgres binds NOTIFY's payload as a parameter,
            # which psycopg 3 sends to the server as $1, and PostgreSQL refuses there
            url = embedded_url(DAGSTER_DATABASE).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
        settings["storage"] = {"postgres": {"postgres_url": url}}
    elif storage != "sqlite":
        raise BadInput(f"--storage {storage!r}: expected sqlite or postgres")
    import yaml

    return yaml.safe_dump(settings, sort_keys=False)


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def summary_table(scale: float) -> Table:
    """The demo's summary: names wrap onto more lines rather than being cut (`ORDER_LIST_…`)."""
    summary = Table(title=f"dbsweep demo (scale {scale:g})")
    for name in ("policy", "phase", "kind", "tables", "rows before", "rows after", "changed", "rows/s", "batches",
                 "longest batch", "apply", "total", "verified"):
        text = name in ("policy", "phase", "kind", "tables", "changed", "verified")
        summary.add_column(name, justify="left" if text else "right", overflow="fold")
    return summary


def launch_ui(out: Console, host: str = "127.0.0.1", port: int = 3000, storage: str = "sqlite",
              storage_url_env: str | None = None) -> int:
    """`dg dev -w workspace.yaml` as a child process (what `dagster dev` starts, which Dagster 1.13
    marks superseded by it): when it ends (Ctrl-C reaches both), this process exits normally and
    stops the embedded server it started, unless another process still uses it."""
    workspace = find_file("workspace.yaml")
    wanted = dagster_settings(storage, storage_url_env)  # refused before anything is written
    home = dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    settings = home / "dagster.yaml"
    if storage != "sqlite" or not settings.read_text().strip():
        settings.write_text(wanted)
    for path in sorted((workspace.parent / "policies").glob("*.toml")):
        policy = load_policy(path)
        default = policy.database.env[policy.database.default_env]
        if default.url == "embedded" and not default.fleet:
            connect(policy)  # starts the embedded server and creates the policy's database
    beside = Path(sys.executable).parent / "dg"  # the venv's, even when it is not activated
    dg = str(beside) if beside.exists() else shutil.which("dg")
    if dg is None:
        raise DbsweepError("the `dg` command (dagster-dg-cli) is not installed in this environment")
    out.print(f"starting dg dev on http://{host}:{port} (DAGSTER_HOME={home})")
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # started in the background by a script: dg dev would inherit SIGINT ignored, and it
        # handles SIGTERM as it handles SIGINT, so nothing could stop it but SIGKILL
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # its own process group: dg dev, its webserver, daemon and code servers are stopped
    # together, none left to linger after this process ends
    child = subprocess.Popen([dg, "dev", "-w", str(workspace), "-h", host, "-p", str(port)], cwd=workspace.parent,
                             start_new_session=True)
    try:
        code = child.wait()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (which every dbsweep command takes as Ctrl-C)
        stop_process_group(child)
        raise
    stop_process_group(child)  # what dg dev left of its group when it ended by itself
    return code


def stop_process_group(child: subprocess.Popen, grace_s: float = 60, linger_s: float = 10) -> None:
    """SIGTERM to the child's whole process group; SIGKILL to what is still there after `grace_s`
    (the child) or `linger_s` (the rest once the child has ended)."""
    group = child.pid

    def signal_group(signum) -> bool:
        try:
            os.killpg(group, signum)
            return True
        except ProcessLookupError:
            return False  # nothing of the group is left

    signal_group(signal.SIGTERM)
    try:
        child.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        signal_group(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + linger_s
    while signal_group(0) and time.monotonic() < deadline:
        time.sleep(0.1)
    signal_group(signal.SIGKILL)
