"""The batch executor: walks each step in small transactions, each holding the change, its
ledger row and the run's new cursor. Kill it at any instant: a rerun resumes from the last
committed batch, nothing done twice, nothing lost.

How a step is walked and what a batch does belong to the step's kind (`Kind.walker`); the phase
lock, retries and stop rules have modules of their own; progress and whatever else watches a run
are observers (`dbsweep.observers`)."""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import sqlalchemy as sa

from .catalog import reflect_table
from .dialects import dialect_for
from .errors import StoppedEarly, WaitedTooLong, timed_out
from .kinds import kind_named
from .ledger import FAILED, FINISHED, RUNNING, STOPPED, Ledger, RunRecord
from .observers import Progress, ProgressCallback, RunObserver
from .phase_lock import PhaseLock
from .plan import PhasePlan, utcnow
from .retries import batch_retrying, first_line, is_transient, is_unavailable
from .throttle import FINISHED as REASON_FINISHED
from .throttle import ROW_CAP, BatchSizer, DutyCycle, LoadThrottle, ReplicaLagThrottle, StopOnSignals, StopRules
from .walkers import WalkContext, Walker


@dataclass
class RunOptions:
    batch_size: int | None = None
    target_batch_ms: int | None = None
    max_rows: int | None = None
    max_runtime_s: float | None = None
    sleep_ms: int = 0
    lock_timeout_s: float = 2.0
    statement_timeout_s: float = 60.0
    after: list[str] = field(default_factory=list)
    retries: int = 6  # backoff 0.2 s doubling: about 6 s of outage ridden out
    archive: str = "none"
    archive_dir: Path | None = None
    max_replica_lag_s: float | None = None
    max_waiting_sessions: int | None = None
    max_active_sessions: int | None = None
    throttle_query: str | None = None
    throttle_max: float | None = None
    max_duty: float | None = None
    clock: Callable[[], float] | None = None  # runtime limits' and pauses' clock; time.monotonic unless a test gives its own
    sleep: Callable[[float], None] | None = None  # how pauses wait; time.sleep unless a test's clock moves on instead


@dataclass
class RunReport:
    run_id: str
    plan_id: str
    phase: str
    state: str
    stop_reason: str
    rows: int  # by this run in total, across resumes
    rows_this_session: int
    batches: int
    seconds: float
    resumed: bool
    batch_ms: dict[str, float] = field(default_factory=dict)
    replica_pauses: int = 0
    replica_paused_s: float = 0.0
    throttled_s: float = 0.0  # paused for load (waiting sessions, the throttle query, the duty cycle)

    @property
    def rows_per_s(self) -> float:
        return self.rows_this_session / self.seconds if self.seconds > 0 else 0.0


def _percentiles(durations: list[float]) -> dict[str, float]:
    if not durations:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0}
    ordered = sorted(durations)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"p50": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


class Executor:
    def __init__(self, engine: sa.Engine, plan: PhasePlan, options: RunOptions,
                 on_progress: Callable[[Progress], None] | None = None, observers: Iterable[RunObserver] = ()):
        self.engine, self.plan, self.options = engine, plan, options
        self.dialect = dialect_for(engine)
        self.ledger = Ledger(engine)
        self.kind = kind_named(plan.kind)
        self.ctx = WalkContext(engine, self.dialect, options)
        self.observers = [*observers, *([ProgressCallback(on_progress)] if on_progress else [])]
        self.rules = StopRules(max_rows=options.max_rows, max_runtime_s=options.max_runtime_s,
                               clock=options.clock or time.monotonic, sleep=options.sleep or time.sleep)
        self.rows_here = 0
        self.began = time.monotonic()
        self.conn: sa.Connection | None = None
        self.lock: PhaseLock | None = None
        self.lag = None
        if options.max_replica_lag_s is not None:
            self.lag = ReplicaLagThrottle(self._replica_lag, options.max_replica_lag_s, self.rules)
        self.load = []  # live signals of load, each paused on while over its limit (after the commit)
        if options.max_waiting_sessions is not None:
            self.load.append(LoadThrottle(self._probe(self.dialect.waiting_sessions), options.max_waiting_sessions,
                                          self.rules, poll_s=0.2))
        if options.max_active_sessions is not None:
            self.load.append(LoadThrottle(self._probe(self.dialect.active_sessions), options.max_active_sessions,
                                          self.rules, poll_s=0.1))
        if options.throttle_query is not None:
            query = options.throttle_query
            self.load.append(LoadThrottle(self._probe(lambda conn: self.dialect.throttle_value(conn, query)),
                                          options.throttle_max, self.rules, poll_s=0.2))
        self.duty = DutyCycle(options.max_duty, self.rules) if options.max_duty else None

    def run(self) -> RunReport:
        # A full garbage collection walks every object alive: with Dagster, GE and pandas loaded that
        # is 100+ ms, which would land inside a batch's transaction. Objects from before the run are
        # left out of collections until it ends (unless something else froze them already: then
        # that freeze is left as it is, and so is this one's end).
        ours = gc.get_freeze_count() == 0
        if ours:
            gc.freeze()
        try:
            self.ledger.ensure()
            with PhaseLock(self.engine, self.dialect, self.plan.policy, self.plan.phase) as self.lock:
                report = self._run_locked()
            for observer in self.observers:
                observer.on_finish(report)
            return report
        finally:
            if ours:
                gc.unfreeze()

    def _run_locked(self) -> RunReport:
        plan = self.plan
        run = self.ledger.unfinished_run(plan.policy, plan.phase, plan.env, plan.plan_id) or self.ledger.start_run(plan)
        run.cursor = run.trusted_cursor(len(plan.steps))  # read back: sealed, and a step of this plan
        resumed = run.batches_done > 0
        self.ledger.set_state(run.run_id, RUNNING, None)
        started = time.monotonic()
        reason = REASON_FINISHED
        try:
            with StopOnSignals(self.rules):
                for index in range(run.cursor["step"], len(plan.steps)):
                    reason = self._walk(run, index)
                    if reason != REASON_FINISHED:
                        break
            if reason == REASON_FINISHED:
                self._after_actions()
        except BaseException as exc:
            try:
                self._stop_on_error(run, exc)
            except BaseException as ended:  # the same end, told as resumable
                self._tell_error(ended, started)
                raise
            self._tell_error(exc, started)
            raise
        state = FINISHED if reason == REASON_FINISHED else STOPPED
        self.ledger.set_state(run.run_id, state, reason)
        return RunReport(
            run_id=run.run_id, plan_id=plan.plan_id, phase=plan.phase, state=state, stop_reason=reason,
            rows=run.rows_done, rows_this_session=self.rows_here, batches=run.batches_done,
            seconds=time.monotonic() - started, resumed=resumed,
            batch_ms=_percentiles(self.ledger.batch_durations(run.run_id)),
            replica_pauses=self.lag.pauses if self.lag else 0, replica_paused_s=self.lag.paused_s if self.lag else 0.0,
            throttled_s=sum(t.paused_s for t in self.load) + (self.duty.paused_s if self.duty else 0.0),
        )

    def _stop_on_error(self, run: RunRecord, exc: BaseException) -> None:
        """Record why the run ended; a database that went away, or a wait past every retry, ends it
        resumable (exit 4) instead of failed."""
        phase = self.plan.phase
        if isinstance(exc, StoppedEarly):  # a walker's own resumable stop: the ledger says stopped, as the exit code
            self._try_set_state(run.run_id, STOPPED, first_line(exc)[:200])
            return
        if is_unavailable(exc):  # retries ran out: stop resumable, the ledger says where
            reason = f"error: database unavailable ({first_line(exc)})"[:200]
            self._try_set_state(run.run_id, STOPPED, reason)
            raise StoppedEarly(f"phase {phase!r}: {reason}; run again to resume") from None
        if is_transient(exc):  # a lock held, or a statement slower than its timeout, past every retry
            waited = f"lock_timeout {self.options.lock_timeout_s:g} s" if timed_out(exc) else "retries"
            reason = f"lock wait: {first_line(exc)} ({waited}, {self.options.retries} attempts)"[:200]
            self._try_set_state(run.run_id, STOPPED, reason)
            raise WaitedTooLong(f"phase {phase!r}: stopped on a {reason}; nothing of that batch committed, "
                                "run again to resume") from None
        self._try_set_state(run.run_id, FAILED, f"error: {first_line(exc)}"[:200])

    def _walk(self, run: RunRecord, index: int) -> str:
        step = self.plan.steps[index]
        with self.engine.connect() as conn:
            table = reflect_table(conn, step.table)
        cursor = run.cursor if run.cursor["step"] == index else {"step": index, "after": None}
        try:
            walker = self.kind.walker(self.ctx, table, step, cursor)
            try:
                return self._walk_step(run, index, walker)
            finally:
                walker.close()
        finally:
            self._disconnect()

    def _walk_step(self, run: RunRecord, index: int, walker: Walker) -> str:
        step = walker.step
        sizer = BatchSizer(self.options.batch_size or step.batch_size, self.options.target_batch_ms)
        if not walker.can_stop_within(self.rules.rows_left(self.rows_here)):
            return ROW_CAP  # the step goes whole, and that would overshoot the row cap
        while not walker.done:
            reason = self.rules.reason(self.rows_here)
            if reason:
                return reason
            size = sizer.size
            left = self.rules.rows_left(self.rows_here)
            exact = left is not None and left <= 2 * size  # near a row cap, never overshoot it
            if left is not None:
                size = max(1, min(size, left))
            began_at, began = utcnow(), time.perf_counter()
            rows, next_cursor = self._batch(run, index, walker, size, began_at, exact)
            seconds = time.perf_counter() - began
            walker.advance(next_cursor, rows, size)
            sizer.observe(walker.units(rows), seconds)
            self.rows_here += rows
            self._notify(step.table, run, seconds)
            if self.lag is not None:  # the batch has committed: now wait for the replicas
                self.lag.wait(self.rows_here)
            for throttle in self.load:  # and while the database is busier than the policy allows
                throttle.wait(self.rows_here)
            if self.duty is not None and not walker.done:
                self.duty.after_batch(seconds)
            if self.options.sleep_ms and not walker.done:
                self.rules.pause(self.options.sleep_ms / 1000)
        return REASON_FINISHED

    def _tell_error(self, error: BaseException, started: float) -> None:
        for observer in self.observers:
            observer.on_error(self.plan, error, time.monotonic() - started)

    def _notify(self, table: str, run: RunRecord, seconds: float) -> None:
        elapsed = time.monotonic() - self.began  # the real rate, whatever clock the stop rules keep
        progress = Progress(table, run.rows_done, self.plan.rows_selected, run.batches_done,
                            self.rows_here / elapsed if elapsed else 0.0, seconds * 1000)
        for observer in self.observers:
            observer.on_batch(progress)

    def _batch(self, run: RunRecord, index: int, walker: Walker, size: int, began_at, exact: bool) -> tuple[int, dict]:
        for attempt in batch_retrying(self.options.retries):
            with attempt:
                began = time.perf_counter()
                conn = self._connection()
                walker.sink.begin_batch(run.run_id, run.batches_done + 1)
                try:
                    outside = walker.outside_transaction
                    if outside:  # done and lasting before its ledger row: a rerun repeats it harmlessly
                        rows, cursor = walker.batch(conn, size, exact)
                    with conn.begin():
                        if not outside:
                            rows, cursor = walker.batch(conn, size, exact)
                        # None: this step is done, and the next batch starts the next step
                        cursor = {"step": index + 1, "after": None} if cursor is None else {"step": index, **cursor}
                        self.ledger.record_batch(conn, run, walker.table_name, rows, cursor, began_at,
                                                 (time.perf_counter() - began) * 1000, walker.sink.ref)
                except BaseException:
                    self._disconnect()  # a fresh connection for the retry, whatever state this one is in
                    raise
        run.rows_done += rows
        run.batches_done += 1
        run.cursor = cursor
        return rows, cursor

    def _probe(self, read):
        def probe():
            with self.engine.connect() as conn:
                return read(conn)
        return probe

    def _replica_lag(self) -> float | None:
        with self.engine.connect() as conn:
            return self.dialect.replica_lag_seconds(conn)

    def _try_set_state(self, run_id: str, state: str, reason: str) -> None:
        try:
            self.ledger.set_state(run_id, state, reason)
        except sa.exc.DBAPIError:
            pass  # the database is gone; the run stays 'running' in the ledger, which is resumable too

    def _connection(self) -> sa.Connection:
        """One connection per walk, its timeouts set once for the session: a batch costs only its
        own statements, not a pool checkout, a reset and a SET each time."""
        if self.conn is None:
            self.lock.hold()
            self.conn = self.engine.connect()
            self.dialect.set_session_timeouts(self.conn, self.options.lock_timeout_s, self.options.statement_timeout_s)
            self.conn.commit()
        return self.conn

    def _disconnect(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except sa.exc.DBAPIError:
                pass
            self.conn = None

    def _after_actions(self) -> None:
        tables = {step.table for step in self.plan.steps}
        for action in self.options.after:
            for name in sorted(tables):
                with self.engine.begin() as conn:
                    table = reflect_table(conn, name)
                    (self.dialect.analyze if action == "analyze" else self.dialect.vacuum)(conn, table)
