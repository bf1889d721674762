"""`--all-targets`: one CLI verb over every database of a fleet env, each target in a process of
its own (`dbsweep <verb> … --target NAME`), at most `parallel` at a time. Targets are different
databases, so two of them never share a phase lock; one target's phases run one after another in
its process. A target that fails is reported on its line and the others go on (unless fail_fast).
The exit code is the worst (highest) of the targets'.

Ctrl-C reaches every target's process by itself (one process group); SIGTERM to this process is
passed on to them. Either way the targets running stop as a run does (the batch in progress
finishes), no waiting target starts, and the summary says which stopped and which were skipped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .errors import StoppedEarly
from .names import file_name
from .redact import redact

MEANING = {0: "done", 1: "failed", 2: "bad input", 3: "gate refused", StoppedEarly.exit_code: "stopped, resumable"}
FLEET_FLAGS = {"--all-targets": 0, "--fail-fast": 0, "--parallel": 1}


@dataclass
class TargetRun:
    name: str
    state: str = "waiting"
    code: int | None = None
    seconds: float = 0.0
    last_line: str = ""
    log: Path | None = None
    started: float = field(default=0.0, repr=False)
    process: subprocess.Popen | None = field(default=None, repr=False)


OUTPUT_FLAGS = ("-o", "--output")


def child_argv(argv: list[str], target: str) -> list[str]:
    """The same command for one target: the fleet flags taken out, `--output x.json` made
    `x.<target>.json` (one plan file per database), --target added."""
    out, skip, output_next = [], 0, False
    for token in argv:
        if skip:
            skip -= 1
            continue
        if output_next:
            out.append(_per_target(token, target))
            output_next = False
            continue
        name, eq, value = token.partition("=")
        if name in FLEET_FLAGS:
            skip = FLEET_FLAGS[name] if not eq else 0
            continue
        if name in OUTPUT_FLAGS:
            if eq:
                token = f"{name}={_per_target(value, target)}"
            else:
                output_next = True
        out.append(token)
    return [*out, "--target", target]


def _per_target(path: str, target: str) -> str:
    where = Path(path)
    return str(where.with_name(f"{where.stem}.{target}{where.suffix}"))


def _last_words(text: str) -> str:
    """The last line of a target's output that says something (not a table border)."""
    for line in reversed(text.splitlines()):
        words = line.strip(" │┃└┘┌┐┏┓┗┛━─┡┩╇╈┼\t")
        if any(ch.isalnum() for ch in words):
            return " ".join(words.split())
    return ""


def run_fleet(out: Console, verb_argv: list[str], targets: list[str], parallel: int, fail_fast: bool,
              log_dir: Path) -> int:
    """Run the command once per target; show each target's state as it goes, then a summary."""
    runs = [TargetRun(name) for name in targets]
    stop, interrupted = threading.Event(), threading.Event()
    # a target starts, or is skipped, atomically with a stop (reentrant: a signal handler takes it too)
    started = threading.RLock()
    log_dir.mkdir(parents=True, exist_ok=True)

    def one(run: TargetRun) -> None:
        with started:
            if stop.is_set():
                run.state = "skipped (interrupted)" if interrupted.is_set() else "skipped (--fail-fast)"
                return
            run.state, run.started = "running", time.monotonic()
            run.log = log_dir / file_name(run.name, ".log")  # a database's name is data, not a path
            with open(run.log, "w") as log:
                run.process = subprocess.Popen([sys.executable, "-m", "dbsweep.cli", *child_argv(verb_argv, run.name)],
                                               stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        run.code, run.seconds = run.process.wait(), time.monotonic() - run.started
        run.last_line = redact(_last_words(run.log.read_text(errors="replace")))
        run.state = MEANING.get(run.code, f"exit {run.code}")
        if run.code and fail_fast:
            stop.set()

    def halt(forward: int | None) -> None:
        """No waiting target starts; the running ones get `forward` (None: they had the signal)."""
        with started:
            interrupted.set()
            stop.set()
            if forward is not None:
                for run in runs:
                    if run.process is not None and run.process.poll() is None:
                        run.process.send_signal(forward)

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: halt(signal.SIGTERM))
    try:
        with Live(_table(runs, "fleet"), console=out, refresh_per_second=4, transient=True) as live:
            with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
                futures = [pool.submit(one, run) for run in runs]
                while not all(f.done() for f in futures):
                    try:
                        live.update(_table(runs, "fleet"))
                        time.sleep(0.25)
                    except KeyboardInterrupt:  # Ctrl-C: the targets' processes had it too
                        if interrupted.is_set():
                            raise  # a second one: stop waiting for them
                        halt(None)
                for future in futures:
                    future.result()
    finally:
        signal.signal(signal.SIGTERM, previous)
    out.print(_table(runs, f"fleet summary ({len(runs)} targets, --parallel {parallel}); logs in {log_dir}"))
    codes = [run.code for run in runs if run.code is not None]
    if interrupted.is_set():
        codes.append(StoppedEarly.exit_code)
    worst = max(codes, default=0)
    failing = [run for run in runs if run.code]
    if failing:  # the exit code's reason on stderr too, as every command gives it: one line
        shown = "; ".join(f"{run.name} (exit {run.code}: {run.last_line[:120]})" for run in failing[:3])
        more = f" and {len(failing) - 3} more" if len(failing) > 3 else ""
        sys.stderr.write(f"dbsweep: {len(failing)} of {len(runs)} targets did not finish: {shown}{more}\n")
    return worst


def _table(runs: list[TargetRun], title: str) -> Table:
    table = Table(title=title)
    for name in ("target", "state", "exit", "seconds", "last line"):
        table.add_column(name, justify="right" if name in ("exit", "seconds") else "left", overflow="fold")
    for run in runs:
        seconds = run.seconds or (time.monotonic() - run.started if run.started else 0.0)
        table.add_row(Text(run.name), run.state, "" if run.code is None else str(run.code), f"{seconds:.1f}",
                      Text(run.last_line[:160]))  # as written: a name like `x_[bold]y` is no markup
    return table
