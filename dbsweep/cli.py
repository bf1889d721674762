"""The `dbsweep` command: the seeds' maintenance commands as one tool.

Exit codes: 0 done, 1 failed, 2 bad input, 3 gate refused, 4 stopped early but resumable."""

from __future__ import annotations

import functools
import gc
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from . import service
from .errors import BadInput, DbsweepError, GateRefused, StoppedEarly
from .files import owner_only
from .plan import PhasePlan, PlanFile
from .policy import Policy, load_policy
from .redact import redact
from .target import Target, connect, is_fleet
from .throttle import stopped_by_signal
from .windows import parse_window


def _flags_show_no_type(display):
    """typer 0.29 prints every flag as `--dry-run <bool>`, as if it took a value: flags show no type."""
    def display_type_rich(self, ctx):
        return None if getattr(self.type_descriptor, "annotation", None) is bool else display(self, ctx)
    return display_type_rich


if hasattr(typer.core, "TyperOption") and hasattr(typer.core.TyperOption, "display_type_rich"):
    typer.core.TyperOption.display_type_rich = _flags_show_no_type(typer.core.TyperOption.display_type_rich)

app = typer.Typer(
    help="Clean production databases safely: plan, gate, batched apply, verify.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
_WIDTH = None if sys.stdout.isatty() else 160  # tables stay readable in logs and pipes
out = Console(width=_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

PolicyArg = Annotated[Path, typer.Argument(help="Policy file (TOML), e.g. policies/telemetry.toml.")]
PhaseOpt = Annotated[Optional[list[str]], typer.Option("--phase", "-p", help="Phase name; repeat for several. Default: every phase.")]
EnvOpt = Annotated[Optional[str], typer.Option("--env", "-e", help="Policy environment (default: DBSWEEP_ENV, else the policy's default_env).")]
TargetOpt = Annotated[Optional[str], typer.Option("--target", "-t", help="Fleet env: the one database (target) to work on.")]
RunTargetOpt = Annotated[Optional[str], typer.Option("--target", "-t", help="Fleet env: the database the run changed; default: the target whose ledger holds the run.")]
AllTargetsOpt = Annotated[bool, typer.Option("--all-targets", help="Fleet env: the command on every target, each in its own process; a summary table at the end, the worst exit code.")]
ParallelOpt = Annotated[int, typer.Option("--parallel", min=1, max=64, help="With --all-targets: this many targets at once (never two commands on one database).")]
FailFastOpt = Annotated[bool, typer.Option("--fail-fast", help="With --all-targets: start no further target once one has failed.")]
WindowOpt = Annotated[Optional[str], typer.Option("--window", "-w", help="Retention only: purge one window of the time column, e.g. 2022-03 (a month), 2022-03-05 (a day) or 2022-03-01..2022-04-15 (end excluded).")]


def guarded(command):
    """One clear line and the right exit code for every failure; never a password."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except DbsweepError as exc:
            err.print(f"dbsweep: {redact(exc)}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("dbsweep: interrupted", markup=False)
            raise typer.Exit(StoppedEarly.exit_code) from None
        except Exception as exc:  # an unexpected failure: one line, redacted
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            err.print(f"dbsweep: failed: {type(exc).__name__}: {redact(first)}", markup=False, soft_wrap=True)
            if os.environ.get("DBSWEEP_DEBUG"):
                raise
            raise typer.Exit(1) from None

    return wrapper


def _open(policy_path: Path, env: str | None, target: str | None = None) -> tuple[Policy, Target]:
    policy = load_policy(policy_path)
    return policy, connect(policy, env, target)


def _fan_out(policy_path: Path | None, env: str | None, target: str | None, parallel: int, fail_fast: bool) -> None:
    """--all-targets: the same command once per target of the fleet env, then exit with the worst code."""
    from .embedded import dbsweep_home
    from .fleet import run_fleet
    from .target import choose_env, target_names

    if policy_path is None:
        raise BadInput("--all-targets needs a policy file")
    if target is not None:
        raise BadInput("--target and --all-targets do not go together")
    policy = load_policy(policy_path)
    chosen = choose_env(policy, env)
    if not is_fleet(policy, chosen):
        raise BadInput(f"{policy.path}: env {chosen!r} is one database: --all-targets needs 'targets' or 'databases_like'")
    names = target_names(policy, chosen)
    if not names:
        raise BadInput(f"{policy.path}: env {chosen!r} has no target (databases_like matched none)")
    logs = dbsweep_home() / "fleet" / f"{policy.name}-{datetime.now():%Y%m%dT%H%M%S}"
    raise typer.Exit(run_fleet(out, sys.argv[1:], names, parallel, fail_fast, logs))


def _phases(policy: Policy, phases: list[str] | None, window: str | None = None) -> list[str]:
    """The phases named, else every phase (with --window: every phase that can be cut into windows)."""
    if not phases and window:
        from .kinds import kind_named

        windowed = [p.name for p in policy.phases if kind_named(p.kind).windowed]
        if not windowed:
            raise BadInput(f"{policy.path}: --window {window}: no phase of this policy can be cut into time windows")
        return windowed
    if not phases:
        return [p.name for p in policy.phases]
    for name in phases:
        policy.phase(name)
    return phases


def _window_of(plan: PhasePlan):
    window = plan.steps[0].spec.get("window") if plan.steps else None
    return tuple(datetime.fromisoformat(t) for t in window) if window else None


def _tell_dagster(event: str, *args) -> None:
    """A CLI plan, run or verification shows in Dagster's asset history too: in DAGSTER_HOME, else
    the instance `dbsweep ui` shows ($DBSWEEP_HOME/dagster). DBSWEEP_DAGSTER_HISTORY=off leaves
    Dagster out (and its import, a second or two). A history that cannot be written is one warning
    line: what was done to the database stands, and is in the ledger."""
    if os.environ.get("DBSWEEP_DAGSTER_HISTORY", "on").lower() in ("off", "0", "false", "no"):
        return
    from .embedded import dagster_home

    os.environ["DAGSTER_HOME"] = str(dagster_home())
    try:
        from assets import cli_history  # Dagster: imported only here

        getattr(cli_history, event)(*args)
    except Exception as exc:  # noqa: BLE001 - any failure of the history must leave the command's outcome as it is
        err.print(f"dbsweep: warning: not recorded in Dagster's history ({type(exc).__name__}: "
                  f"{redact(str(exc).splitlines()[0] if str(exc) else '')})", markup=False, soft_wrap=True)


def _say_no_undo(policy, plan: PhasePlan) -> None:
    why = service.no_undo(policy, plan)
    if why:
        out.print(f"[bold]{escape(plan.phase)}[/]: [bold red]no undo[/]: {escape(why)}", soft_wrap=True)


def _gate(target: Target, plan: PhasePlan) -> PhasePlan:
    # Great Expectations: imported only when a gate runs
    from expectations.runner import gate

    return service.record_gate(target, plan, gate(plan))


@app.command()
@guarded
def plan(policy_path: PolicyArg, phase: PhaseOpt = None, env: EnvOpt = None, window: WindowOpt = None,
         output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the frozen plan (cutoff report) as JSON; with --all-targets, one file per target (<name>.<target>.json).")] = None,
         target: TargetOpt = None, all_targets: AllTargetsOpt = False, parallel: ParallelOpt = 1, fail_fast: FailFastOpt = False):
    """Discovery and gate: profile each phase, freeze its cutoff and selection, run its
    Great Expectations gate. Exit 3 when a gate refuses."""
    from .report import print_plan

    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        raise BadInput(f"--output {output}: {'is a directory' if output.is_dir() else 'its folder does not exist'}; "
                       "nothing was planned")
    if all_targets:
        _fan_out(policy_path, env, target, parallel, fail_fast)
    policy, target = _open(policy_path, env, target)
    bounds = parse_window(window) if window else None
    plans = [_gate(target, service.make_plan(policy, name, target, window=bounds))
             for name in _phases(policy, phase, window)]
    for made in plans:
        _tell_dagster("plan_made", made, target)
    print_plan(out, target, plans)
    for made in plans:
        _say_no_undo(policy, made)
        if made.gate.report:
            out.print(f"{made.phase}: gate report {made.gate.report}", soft_wrap=True)
    if output:
        PlanFile(policy=policy.name, env=target.env, phases=plans).write(output)
        out.print(f"plan written to {output}")
    if not all(p.gate.passed for p in plans):
        raise GateRefused("gate refused: " + "; ".join(f"{p.phase}: {p.gate.summary}" for p in plans if not p.gate.passed))


@app.command()
@guarded
def run(policy_path: PolicyArg, phase: PhaseOpt = None, env: EnvOpt = None,
        plan_file: Annotated[Optional[Path], typer.Option("--plan", help="Execute exactly this plan file (from `dbsweep plan -o`).")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Check plan, gate and confirmation; change nothing.")] = False,
        confirm: Annotated[Optional[str], typer.Option("--confirm", help="Phase name; required for a real run in a protected env.")] = None,
        accept_no_undo: Annotated[bool, typer.Option("--accept-no-undo", help="Required as well for a real run, in a protected env, of a phase whose change `dbsweep restore` could not undo (nothing archived).")] = False,
        batch_size: Annotated[Optional[int], typer.Option(min=1, help="Override the phase's batch_size.")] = None,
        max_rows: Annotated[Optional[int], typer.Option(min=1, help="Stop (resumable) after this many rows.")] = None,
        window: WindowOpt = None, target: TargetOpt = None, all_targets: AllTargetsOpt = False, parallel: ParallelOpt = 1,
        fail_fast: FailFastOpt = False):
    """Apply phases in batches. Without --plan: resume the phase's unfinished run if there is
    one (with --window: one of that window), else plan and gate now. Exit 4 when stopped early
    (resumable: run again)."""
    from .report import print_dry_run, print_run, print_waiting, when

    if all_targets:
        if plan_file:
            raise BadInput("--plan and --all-targets do not go together: a plan file belongs to one database")
        _fan_out(policy_path, env, target, parallel, fail_fast)
    policy, target = _open(policy_path, env, target)
    bounds = parse_window(window) if window else None
    if bounds and plan_file:
        raise BadInput("--window and --plan do not go together: the plan file already holds its selection")
    frozen = PlanFile.read(plan_file) if plan_file else None
    names = _phases(policy, phase, window) if phase or not frozen else [p.phase for p in frozen.phases]
    stopped = []
    for name in names:
        if frozen:
            chosen = frozen.phase(name)
        else:
            chosen = service.resumable_plan(policy, name, target)
            its_window = _window_of(chosen) if chosen is not None else None
            if chosen is not None and bounds and its_window != bounds:
                chosen = None  # an unfinished run of another window stays for its own command
            if chosen is not None:
                within = f"window {' to '.join(map(str, its_window))}, " if its_window else ""
                out.print(f"[bold]{name}[/]: resuming plan {chosen.plan_id} ({within}cutoff frozen at {when(chosen.cutoff)})")
            else:
                chosen = _gate(target, service.make_plan(policy, name, target, window=bounds))
                _tell_dagster("plan_made", chosen, target)
        print_waiting(out, chosen)
        _say_no_undo(policy, chosen)
        if dry_run:
            dry = service.apply(policy, target, chosen, dry_run=True, confirm=confirm, batch_size=batch_size)
            _tell_dagster("run_done", chosen, dry, True, policy.phase(name).archive)
            print_dry_run(out, dry)
            continue
        from .progress import progress_bar

        with progress_bar(out, chosen) as on_progress:
            report = service.apply(policy, target, chosen, dry_run=False, confirm=confirm,
                                   accept_no_undo=accept_no_undo, on_progress=on_progress,
                                   batch_size=batch_size, max_rows=max_rows)
        _tell_dagster("run_done", chosen, report, False, policy.phase(name).archive)
        print_run(out, report)
        if report.state != "finished":
            stopped.append(f"{name}: {report.stop_reason}")
        if stopped_by_signal(report.stop_reason):  # the operator's stop is for the whole command
            later = names[names.index(name) + 1:]
            if later:
                stopped.append(f"not started: {', '.join(later)}")
            break
    if stopped:
        raise StoppedEarly("stopped early, resumable with the same command: " + "; ".join(stopped))


@app.command()
@guarded
def verify(policy_path: PolicyArg, phase: PhaseOpt = None, env: EnvOpt = None, target: TargetOpt = None,
           run_id: Annotated[Optional[str], typer.Option("--run", help="Judge this run (as `dbsweep status` lists it) instead of the phase's latest run that went to the end.")] = None,
           all_targets: AllTargetsOpt = False, parallel: ParallelOpt = 1, fail_fast: FailFastOpt = False):
    """Prove the post-conditions of each phase's latest applied run (its plan), or of --run. Exit 1 if not met."""
    from expectations.runner import verification

    from .ledger import FINISHED, Ledger
    from .report import print_verification, when

    if all_targets:
        _fan_out(policy_path, env, target, parallel, fail_fast)
    policy, target = _open(policy_path, env, target)
    ledger = Ledger(target.engine)
    ledger.ensure()
    failed = []
    for name, run in _runs_to_verify(policy, target, ledger, phase, run_id):
        latest = ledger.latest_plan(policy.name, name, target.env)
        if run is None:
            if latest is None:
                raise BadInput(f"phase '{name}' has no plan in the ledger yet: run `dbsweep plan` first")
            out.print(f"[bold]{escape(name)}[/] (plan {latest.plan_id}): no run of this phase went to the end yet "
                      "(`dbsweep run` applies or resumes it), so there is nothing to verify")
            continue
        if run.state != FINISHED:
            out.print(f"[bold]{escape(name)}[/]: run {run.run_id} (plan {run.plan_id}) was restored (undone) at "
                      f"{when(run.updated_at)}: nothing of it is applied, so there is nothing to verify")
            continue
        plan = ledger.approved_plan(run.plan_id)
        newer = f"; plan {latest.plan_id} is newer and not applied" if latest and latest.plan_id != plan.plan_id else ""
        out.print(f"[bold]{escape(name)}[/]: verifying run {run.run_id} (plan {plan.plan_id}, finished "
                  f"{when(run.finished_at)}){newer}")
        rows = service.verify(target, plan)
        verdict = verification(plan, rows)
        _tell_dagster("verified", plan, rows, verdict)
        print_verification(out, plan, rows, verdict)
        if verdict.report:
            out.print(f"  report {verdict.report}", soft_wrap=True)
        if not verdict.passed:
            failed.append(name)
    if failed:
        raise DbsweepError(f"verification failed for: {', '.join(failed)}")


def _runs_to_verify(policy, target, ledger, phases, run_id):
    """(phase, its latest run that went to the end, or None), or the one run --run names."""
    if run_id is None:
        return [(name, ledger.latest_applied_run(policy.name, name, target.env)) for name in _phases(policy, phases)]
    run = ledger.find_run(run_id)
    if run is None or run.policy != policy.name or run.env != target.env:
        raise BadInput(f"--run {run_id}: no run of policy '{policy.name}' (env {target.env!r}) with that id in this "
                       "database's ledger (`dbsweep status` lists them)")
    if phases and run.phase not in phases:
        raise BadInput(f"--run {run_id}: the run is of phase '{run.phase}', not {', '.join(map(repr, phases))}")
    if run.state not in ("finished", "restored"):
        raise BadInput(f"--run {run_id}: the run is {run.state}; only a run that went to the end can be verified")
    return [(run.phase, run)]


@app.command()
@guarded
def status(policy_path: Annotated[Optional[Path], typer.Argument(help="Policy file; default: every policy in ./policies.")] = None,
           env: EnvOpt = None, target: TargetOpt = None, all_targets: AllTargetsOpt = False,
           parallel: ParallelOpt = 1, fail_fast: FailFastOpt = False):
    """Runs, their state and rows, why they stopped, and what is resumable."""
    from .report import print_status

    if all_targets:
        _fan_out(policy_path, env, target, parallel, fail_fast)
    for policy, target, ledger in _ledgers(policy_path, env, target):
        runs = ledger.list_runs(policy.name)
        print_status(out, policy, target, runs, ledger.undoable([r.run_id for r in runs]))


def _ledgers(policy_path: Path | None, env: str | None, target: str | None = None):
    """(policy, target, ledger) of the policy given, else of every policy in ./policies."""
    from .ledger import Ledger

    paths = [policy_path] if policy_path else sorted(Path("policies").glob("*.toml"))
    if not paths:
        raise BadInput("no policy given and no policies/*.toml here")
    for path in paths:
        policy, found = _open(path, env, target)
        ledger = Ledger(found.engine)
        ledger.ensure()
        yield policy, found, ledger


@app.command()
@guarded
def check(policy_path: PolicyArg, phase: PhaseOpt = None, env: EnvOpt = None, target: TargetOpt = None,
          all_targets: AllTargetsOpt = False, parallel: ParallelOpt = 1, fail_fast: FailFastOpt = False):
    """The consistency check (hourly in seed 004): every phase's profile and gate, recorded in the
    ledger, nothing applied; then every \\[alerts] threshold. Exit 3 when a gate refuses, 1 when an
    alert fires."""
    from .alerts import evaluate
    from .report import print_alerts, print_plan

    if all_targets:
        _fan_out(policy_path, env, target, parallel, fail_fast)
    policy, target = _open(policy_path, env, target)
    plans = [_gate(target, service.make_plan(policy, name, target)) for name in _phases(policy, phase)]
    print_plan(out, target, plans)
    results = evaluate(policy, target)
    print_alerts(out, policy, results)
    refused = [p for p in plans if not p.gate.passed]
    if refused:
        raise GateRefused("gate refused: " + "; ".join(f"{p.phase}: {p.gate.summary}" for p in refused))
    fired = [r for r in results if r.fired]
    if fired:
        raise DbsweepError("alerts fired: " + "; ".join(f"{r.alert} {r.subject} ({r.severity})" for r in fired))


@app.command()
@guarded
def discover(policy_path: Annotated[Optional[Path], typer.Argument(help="Read the database of this policy's env (or --target); default: the embedded server's --database.")] = None,
             env: EnvOpt = None, target: TargetOpt = None,
             database: Annotated[Optional[str], typer.Option("--database", help="Without a policy: this database of the embedded server.")] = None,
             url_env: Annotated[Optional[str], typer.Option("--url-env", help="Without a policy: the environment variable holding the database's URL.")] = None,
             as_json: Annotated[bool, typer.Option("--json", help="Print the discovery as JSON.")] = False,
             write_policy: Annotated[Optional[Path], typer.Option("--write-policy", help="Write a draft policy with every proposed phase and its evidence (the file's name is the policy's).")] = None):
    """Read a whole database (read-only: catalog, statistics, samples) and propose phases with their
    evidence: old rows, duplicates, polymorphic children, duplicate roots, unused copies, health."""
    import json

    from .discover import discover as read_all
    from .discover_policy import database_block, draft
    from .report import print_discovery

    engine, shown = _discovery_source(policy_path, env, target, database, url_env)
    try:
        found = read_all(engine)
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps(found.as_json(), default=str, indent=2))
    else:
        print_discovery(out, shown, found)
    if write_policy is not None:
        if not any(p.phase for p in found.proposals):
            raise BadInput(f"--write-policy {write_policy}: nothing to propose, so no policy was written")
        text = draft(found, write_policy, database_block(policy_path, database or "postgres", url_env))
        write_policy.write_text(text)
        (err if as_json else out).print(f"draft policy written to {escape(str(write_policy))}: review it, then "
                                        f"`dbsweep plan {escape(str(write_policy))}`", soft_wrap=True)


def _discovery_source(policy_path, env, target, database, url_env):
    """(engine, how to name it) of the database to discover."""
    import sqlalchemy as sa

    from .target import create_engine, display_url, parse_url

    if policy_path is not None:
        if database or url_env:
            raise BadInput("discover: give a policy, or --database / --url-env, not both")
        _, opened = _open(policy_path, env, target)
        return opened.engine, opened.display_url
    if url_env is not None:
        raw = os.environ.get(url_env)
        if not raw:
            raise BadInput(f"discover: environment variable {url_env} is not set")
        url = parse_url(raw)
        return create_engine(url), display_url(url)
    from .embedded import embedded_database_exists, embedded_url

    if not embedded_database_exists(database or "postgres"):
        raise BadInput(f"discover: the embedded server has no database {database!r}")
    url = embedded_url(database or "postgres")
    return sa.create_engine(url), display_url(url, embedded=True)


@app.command()
@guarded
def report(policy_path: PolicyArg, env: EnvOpt = None, target: TargetOpt = None):
    """Where the latest expectation reports (Great Expectations Data Docs) of each phase are: its gate
    and its verification, of the plans this database's ledger holds."""
    from expectations.runner import newest_page, reports_dir

    from .ledger import Ledger

    policy, target = _open(policy_path, env, target)
    ledger = Ledger(target.engine)
    plan_ids = ledger.plan_ids(policy.name, target.env) if ledger.exists() else set()
    pages = {(phase.name, what): newest_page(policy.name, phase.name, what, plan_ids)
             for phase in policy.phases for what in ("gate", "verification")}
    if not any(pages.values()):
        raise BadInput(f"{policy.path}: no expectation report of a plan in {target.display_url}'s ledger yet; "
                       "`dbsweep plan` or `dbsweep verify` writes them")
    out.print(f"{policy.name} on {escape(target.display_url)}: reports under {reports_dir(policy.name)}", soft_wrap=True)
    for (phase, what), page in pages.items():
        out.print(f"  {phase} {what}: {page or 'none yet'}", soft_wrap=True)


@app.command()
@guarded
def stats(policy_path: Annotated[Optional[Path], typer.Argument(help="Policy file; default: every policy in ./policies.")] = None,
          env: EnvOpt = None, target: TargetOpt = None, all_targets: AllTargetsOpt = False,
          parallel: ParallelOpt = 1, fail_fast: FailFastOpt = False):
    """Per phase, from the ledger: runs, success rate, rows changed, last success, median duration and rows/s."""
    from .report import print_stats
    from .stats import phase_stats

    if all_targets:
        _fan_out(policy_path, env, target, parallel, fail_fast)
    for policy, target, ledger in _ledgers(policy_path, env, target):
        print_stats(out, policy, target, phase_stats(ledger, policy.name, [p.name for p in policy.phases]))


@app.command()
@guarded
def metrics(policy_path: PolicyArg, env: EnvOpt = None,
            target: TargetOpt = None,
            listen: Annotated[str, typer.Option("--listen", help="HOST:PORT the Prometheus exporter listens on.")] = "127.0.0.1:9187"):
    """Serve Prometheus metrics for the policy (read from the ledger and the database at each
    scrape) until interrupted. On a fleet env, every target's, labelled `target`."""
    import time

    from .metrics import serve
    from .target import choose_env

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"--listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:9187")
    policy = load_policy(policy_path)
    chosen = choose_env(policy, env)
    whole_fleet = target is None and is_fleet(policy, chosen)
    serve(policy, None if whole_fleet else connect(policy, chosen, target), host, int(port), chosen)
    what = f"{policy.name} metrics" + (" of every fleet target" if whole_fleet else "")
    out.print(f"serving {what} on http://{listen}/metrics (Ctrl-C stops)")
    while True:
        time.sleep(3600)


@app.command()
@guarded
def health(policy_path: PolicyArg, env: EnvOpt = None,
           long_running: Annotated[str, typer.Option(help="Report sessions running or idle in a transaction for longer than this.")] = "5 minutes",
           target: TargetOpt = None, all_targets: AllTargetsOpt = False, parallel: ParallelOpt = 1,
           fail_fast: FailFastOpt = False):
    """The health report: connectivity, connection use, the policy's tables (rows, size, dead
    tuples, largest indexes), the oldest row against each retention rule, and long-running,
    idle-in-transaction and blocked sessions. Exit 1 when something must be fixed before a cleanup."""
    from .durations import parse_duration
    from .health import PROBLEM, health_report
    from .report import print_health

    if all_targets:
        _fan_out(policy_path, env, target, parallel, fail_fast)
    policy, target = _open(policy_path, env, target)
    findings = health_report(policy, target, parse_duration(long_running))
    print_health(out, policy, target, findings)
    problems = [f for f in findings if f.status == PROBLEM]
    if problems:
        raise DbsweepError("health: " + "; ".join(f"{f.check} {f.subject}" for f in problems))


@app.command()
@guarded
def restore(run_id: Annotated[str, typer.Argument(help="Run id, as `dbsweep status` lists it.")],
            policy_path: Annotated[Optional[Path], typer.Option("--policy", help="Policy file; default: the policy in ./policies whose database holds the run.")] = None,
            env: EnvOpt = None, target: RunTargetOpt = None):
    """Undo a run from what it recorded: archived rows go back (rows whose key exists again are
    skipped and counted), the run is marked restored. Running it twice changes nothing more."""
    from .restore import restore_run

    policy, target = _find_run(run_id, policy_path, env, target)
    report = restore_run(target.engine, run_id, policy.archive_dir)
    if report.already_restored:
        out.print(f"run {run_id} ({report.phase}) was already restored: {report.detail}; nothing changed")
    else:
        out.print(f"run {run_id} ({report.phase}) restored from {report.batches:,} batches: {report.detail}")


@app.command()
@guarded
def abandon(run_id: Annotated[str, typer.Argument(help="Run id, as `dbsweep status` lists it.")],
            policy_path: Annotated[Optional[Path], typer.Option("--policy", help="Policy file; default: the policy in ./policies whose database holds the run.")] = None,
            env: EnvOpt = None, target: RunTargetOpt = None):
    """Give up an unfinished run (stopped, failed or interrupted): it is never resumed, so the phase
    can be planned and run afresh. What it changed stays recorded and undoable with `dbsweep restore`."""
    from .ledger import Ledger

    _, target = _find_run(run_id, policy_path, env, target)
    run = Ledger(target.engine).abandon(run_id, "abandoned by the operator")
    out.print(f"run {run_id} ({run.phase}) abandoned after {run.rows_done:,} rows in {run.batches_done:,} batches; "
              f"`dbsweep run` now makes a new plan. Undo what it did with: dbsweep restore {run_id}")


def _find_run(run_id: str, policy_path: Path | None, env: str | None, target: str | None = None
              ) -> tuple[Policy, Target]:
    """The policy and database whose ledger holds the run: of a fleet env, the given target, else
    each of its targets in turn (one that cannot be reached is passed over, and named if the run
    is found nowhere)."""
    from .ledger import Ledger
    from .target import target_names

    paths = [policy_path] if policy_path else sorted(Path("policies").glob("*.toml"))
    unreachable = []
    for path in paths:
        policy = load_policy(path)
        searching = target is None and is_fleet(policy, env)
        for name in target_names(policy, env) if searching else [target]:
            try:
                found = connect(policy, env, name)
            except DbsweepError:
                if not searching:
                    raise
                unreachable.append(name)
                continue
            if Ledger(found.engine).find_run(run_id) is not None:
                return policy, found
            found.engine.dispose()
    searched = ", ".join(str(p) for p in paths) or "no policies/*.toml here"
    passed_over = f"; not searched, unreachable: target {', '.join(unreachable)}" if unreachable else ""
    raise BadInput(f"run {run_id} is not in the ledger of {searched}{passed_over}; pass --policy and --env "
                   "(and --target)")


@app.command()
@guarded
def demo(scale: Annotated[float, typer.Option(min=0.01, help="Data volume multiplier (1 = 200k events, 100k aggregates, 20k orders, 20k NES contacts, 100k readings, 380k ETL rows to dedupe, 2k applications of folders to merge).")] = 1.0,
         load_only: Annotated[bool, typer.Option("--load-only", help="Load the sample data into fresh databases and stop: the README workflow starts from there.")] = False,
         fleet: Annotated[Optional[int], typer.Option("--fleet", min=1, max=100, help="Instead: this many telemetry databases of different sizes, run as one fleet (--all-targets --parallel 2).")] = None):
    """Start the embedded PostgreSQL, load the sample data into freshly created databases, and run
    every phase: plan, gate, apply, verify (with --load-only: load, and change nothing)."""
    from .demo_run import run_demo, run_fleet_demo

    if fleet is not None:
        raise typer.Exit(run_fleet_demo(out, fleet, scale))
    run_demo(out, scale, load_only)


@app.command()
@guarded
def ui(host: Annotated[str, typer.Option("--host", help="Address the Dagster UI listens on.")] = "127.0.0.1",
       port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port of the Dagster UI.")] = 3000,
       storage: Annotated[str, typer.Option("--storage", help="Dagster's own runs, events and schedules: sqlite (files in DAGSTER_HOME) or postgres.")] = "sqlite",
       storage_url_env: Annotated[Optional[str], typer.Option("--storage-url-env", help="With --storage postgres: the environment variable holding the PostgreSQL URL (default: the embedded server's `dagster` database).")] = None):
    """Start `dg dev` (Dagster's UI, daemon and code server) on this project with the embedded database ready; Ctrl-C stops both."""
    from .demo_run import launch_ui

    code = launch_ui(out, host, port, storage, storage_url_env)
    if code:
        raise DbsweepError(f"dg dev exited with code {code}")


def main() -> None:
    # SIGTERM (a service manager, `kill`) ends a command the way Ctrl-C does, so the process exits
    # normally and gives back its hold on the embedded server, which stops when no one else uses
    # it; a run in progress still finishes its batch first (it handles the signal itself).
    signal.signal(signal.SIGTERM, _interrupt)
    owner_only()
    try:
        code = _invoke()
    finally:
        # Interpreter shutdown collects every object left; with Great Expectations loaded that took
        # 0.7 s, which an operator's Ctrl-C would wait for. Frozen objects are left to the OS.
        gc.freeze()
    sys.exit(code)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _invoke() -> int:
    try:
        code = app(standalone_mode=False, prog_name="dbsweep")
    except typer.TyperException as exc:  # a usage error (unknown option, bad value): one line, exit 2
        message = (exc.format_message() if hasattr(exc, "format_message") else str(exc)).strip()
        if message:  # empty when the help was shown for a bare `dbsweep`
            err.print(f"dbsweep: {redact(message)} (see dbsweep --help)", markup=False, highlight=False, soft_wrap=True)
        return getattr(exc, "exit_code", 2)
    except typer.Abort:
        err.print("dbsweep: interrupted", markup=False)
        return StoppedEarly.exit_code
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
