"""The batch executor: walks each step's key space in small transactions, each holding the
change, its ledger row and the run's new cursor. Kill it at any instant: a rerun resumes from
the last committed batch, nothing done twice, nothing lost."""

from __future__ import annotations

import gc
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import sqlalchemy as sa
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from .archive import NoArchive, RetryBatch, make_archive
from .catalog import reflect_table
from .dialects import dialect_for
from .errors import DbsweepError, StoppedEarly, WaitedTooLong, timed_out
from .keys import from_json, to_json
from .kinds import kind_module
from .kinds.common import key_columns
from .kinds.partitioned import ARCHIVE_SCHEMA
from .ledger import FAILED, FINISHED, RUNNING, STOPPED, Ledger, RunRecord
from .plan import PhasePlan, Step, utcnow
from .redact import redact
from .throttle import FINISHED as REASON_FINISHED
from .throttle import ROW_CAP, BatchSizer, ReplicaLagThrottle, StopOnSignals, StopRules

# lock_not_available, query_canceled (statement timeout), serialization_failure, deadlock_detected
TRANSIENT_SQLSTATES = {"55P03", "57014", "40001", "40P01"}
# admin_shutdown, crash_shutdown, cannot_connect_now (a restart), and class 08 connection exceptions
UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03"}


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


@dataclass
class Progress:
    table: str
    rows_done: int
    rows_planned: int
    batches: int
    rows_per_s: float
    batch_ms: float


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

    @property
    def rows_per_s(self) -> float:
        return self.rows_this_session / self.seconds if self.seconds > 0 else 0.0


def is_unavailable(exc: BaseException) -> bool:
    """The database went away (restart, failover, network): nothing of the batch committed."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if exc.connection_invalidated or sqlstate in UNAVAILABLE_SQLSTATES or (sqlstate or "").startswith("08"):
        return True
    return isinstance(exc, sa.exc.OperationalError) and sqlstate is None  # could not connect at all


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, RetryBatch):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        return is_unavailable(exc) or getattr(exc.orig, "sqlstate", None) in TRANSIENT_SQLSTATES
    return False


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__)


def _percentiles(durations: list[float]) -> dict[str, float]:
    if not durations:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0}
    ordered = sorted(durations)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"p50": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


class Executor:
    def __init__(self, engine: sa.Engine, plan: PhasePlan, options: RunOptions,
                 on_progress: Callable[[Progress], None] | None = None):
        self.engine, self.plan, self.options = engine, plan, options
        self.dialect = dialect_for(engine)
        self.ledger = Ledger(engine)
        self.kind = kind_module(plan.kind)
        self.on_progress = on_progress or (lambda progress: None)
        self.rules = StopRules(max_rows=options.max_rows, max_runtime_s=options.max_runtime_s)
        self.rows_here = 0
        self.conn: sa.Connection | None = None
        self.lag = None
        if options.max_replica_lag_s is not None:
            self.lag = ReplicaLagThrottle(self._replica_lag, options.max_replica_lag_s, self.rules)

    def run(self) -> RunReport:
        # A full garbage collection walks every object alive: with Dagster, GE and pandas loaded that
        # is 100+ ms, which would land inside a batch's transaction. Objects from before the run are
        # left out of collections until it ends (unless something else froze them already: then
        # that freeze is left as it is, and so is this one's end).
        ours = gc.get_freeze_count() == 0
        if ours:
            gc.freeze()
        try:
            return self._run()
        finally:
            if ours:
                gc.unfreeze()

    def _run(self) -> RunReport:
        self.ledger.ensure()
        self.lock_key = f"dbsweep:{self.plan.policy}:{self.plan.phase}"
        self.lock_conn: sa.Connection | None = self.engine.connect()
        try:
            if not self.dialect.try_phase_lock(self.lock_conn, self.lock_key):
                raise DbsweepError(f"phase {self.plan.phase!r} is already running against this database")
            self.lock_conn.commit()  # a session lock: not left idle in a transaction for the whole run
            return self._run_locked()
        finally:
            self._drop_lock_session(release=True)

    def _drop_lock_session(self, release: bool) -> None:
        if self.lock_conn is None:
            return
        try:
            if release:
                self.dialect.release_phase_lock(self.lock_conn, self.lock_key)
                self.lock_conn.commit()
            self.lock_conn.close()
        except sa.exc.DBAPIError:
            self.lock_conn.invalidate()  # the session is gone, and its lock with it
        self.lock_conn = None

    def _hold_phase_lock(self) -> None:
        """The phase lock belongs to its own session, and a server restart ends that session and
        frees the lock. Before a new walk connection is used, make sure the lock is still ours,
        taking it again after a restart; if another process took it meanwhile, stop."""
        if self.lock_conn is not None:
            try:
                self.lock_conn.execute(sa.select(sa.literal(1)))
                self.lock_conn.rollback()
                return
            except sa.exc.DBAPIError:
                self._drop_lock_session(release=False)
        conn = self.engine.connect()  # fails (and the batch is retried) while the server is down
        if not self.dialect.try_phase_lock(conn, self.lock_key):
            conn.close()
            raise DbsweepError(f"phase {self.plan.phase!r}: another process took its lock while the database "
                               "restarted; this run stops here (its ledger is consistent)")
        conn.commit()
        self.lock_conn = conn

    def _run_locked(self) -> RunReport:
        plan = self.plan
        run = self.ledger.unfinished_run(plan.policy, plan.phase, plan.env, plan.plan_id) or self.ledger.start_run(plan)
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
            if is_unavailable(exc):  # retries ran out: stop resumable, the ledger says where
                reason = f"error: database unavailable ({_first_line(exc)})"[:200]
                self._try_set_state(run.run_id, STOPPED, reason)
                raise StoppedEarly(f"phase {plan.phase!r}: {reason}; run again to resume") from None
            if is_transient(exc):  # a lock held, or a statement slower than its timeout, past every retry
                waited = f"lock_timeout {self.options.lock_timeout_s:g} s" if timed_out(exc) else "retries"
                reason = (f"lock wait: {_first_line(exc)} ({waited}, {self.options.retries} attempts)")[:200]
                self._try_set_state(run.run_id, STOPPED, reason)
                raise WaitedTooLong(f"phase {plan.phase!r}: stopped on a {reason}; nothing of that batch committed, "
                                    "run again to resume") from None
            self._try_set_state(run.run_id, FAILED, f"error: {_first_line(exc)}"[:200])
            raise
        state = FINISHED if reason == REASON_FINISHED else STOPPED
        self.ledger.set_state(run.run_id, state, reason)
        return RunReport(
            run_id=run.run_id, plan_id=plan.plan_id, phase=plan.phase, state=state, stop_reason=reason,
            rows=run.rows_done, rows_this_session=self.rows_here, batches=run.batches_done,
            seconds=time.monotonic() - started, resumed=resumed,
            batch_ms=_percentiles(self.ledger.batch_durations(run.run_id)),
            replica_pauses=self.lag.pauses if self.lag else 0, replica_paused_s=self.lag.paused_s if self.lag else 0.0,
        )

    def _walk(self, run: RunRecord, index: int) -> str:
        step = self.plan.steps[index]
        with self.engine.connect() as conn:
            table = reflect_table(conn, step.table)
        try:
            return self._walk_table(run, index, step, table)
        finally:
            self._disconnect()

    def _walk_table(self, run: RunRecord, index: int, step: Step, table: sa.Table) -> str:
        selection = self.kind.selection(table, step)
        sizer = BatchSizer(self.options.batch_size or step.batch_size, self.options.target_batch_ms)
        cursor = run.cursor if run.cursor["step"] == index else {"step": index, "after": None}
        if step.walk == "partition":
            left = self.rules.rows_left(self.rows_here)
            if left is not None and left < step.rows_selected:
                return ROW_CAP  # a whole partition would overshoot the row cap
        walker = self._walker(step, table, selection, cursor)
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
            sizer.observe(rows, seconds)
            self.rows_here += rows
            elapsed = time.monotonic() - self.rules.started
            self.on_progress(Progress(step.table, run.rows_done, self.plan.rows_selected, run.batches_done,
                                      self.rows_here / elapsed if elapsed else 0.0, seconds * 1000))
            if self.lag is not None:  # the batch has committed: now wait for the replicas
                self.lag.wait(self.rows_here)
            if self.options.sleep_ms and not walker.done:
                self.rules.pause(self.options.sleep_ms / 1000)
        return REASON_FINISHED

    def _walker(self, step: Step, table: sa.Table, selection, cursor: dict):
        if step.walk == "partition":
            return PartitionWalker(self.dialect, table, step, NoArchive(), self.options.archive != "none")
        if hasattr(self.kind, "walker"):  # kinds whose steps are one catalog action (retire)
            return self.kind.walker(self.dialect, table, step, NoArchive(), self.options, cursor)
        if hasattr(self.kind, "make_change"):  # kinds that change rows in place (reset)
            sink = self.kind.make_change(self.engine, self.dialect, table, step, self.options)
        else:
            sink = make_archive(self.options.archive, self.engine, self.dialect, table, self.options.archive_dir)
        if step.walk == "block":
            with self.engine.connect() as conn:
                blocks_now = self.dialect.table_blocks(conn, table)
            return BlockWalker(self.dialect, table, selection, step, sink, cursor.get("block", 0), blocks_now)
        if self.dialect.range_walk and KeyRangeWalker.fits(step, key_columns(table, step)):
            return KeyRangeWalker(self.dialect, table, selection, step, sink, cursor.get("after"))
        return KeyWalker(self.dialect, table, selection, step, sink, cursor.get("after"))

    def _batch(self, run: RunRecord, index: int, walker, size: int, began_at, exact: bool) -> tuple[int, dict]:
        retrying = Retrying(
            stop=stop_after_attempt(self.options.retries), wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception(is_transient), reraise=True,
        )
        for attempt in retrying:
            with attempt:
                began = time.perf_counter()
                conn = self._connection()
                walker.sink.begin_batch(run.run_id, run.batches_done + 1)
                try:
                    with conn.begin():
                        rows, cursor = walker.batch(conn, size, exact)
                        if cursor is None:  # this step is done: the next batch starts the next step
                            cursor = {"step": index + 1, "after": None}
                        else:
                            cursor = {"step": index, **cursor}
                        self.ledger.record_batch(conn, run, getattr(walker, "table_name", walker.step.table), rows,
                                                 cursor, began_at,
                                                 (time.perf_counter() - began) * 1000, walker.sink.ref)
                except BaseException:
                    self._disconnect()  # a fresh connection for the retry, whatever state this one is in
                    raise
        run.rows_done += rows
        run.batches_done += 1
        run.cursor = cursor
        return rows, cursor

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
            self._hold_phase_lock()
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


class KeyWalker:
    def __init__(self, dialect, table: sa.Table, selection, step: Step, sink, after_json):
        self.dialect, self.table, self.selection, self.step, self.sink = dialect, table, selection, step, sink
        self.keys = key_columns(table, step)
        self.last = from_json(self.keys, step.last_key)
        self.after = from_json(self.keys, after_json)
        self.done = step.last_key is None

    def batch(self, conn: sa.Connection, size: int, exact: bool = True) -> tuple[int, dict | None]:
        outcome = self.dialect.delete_batch(conn, self.table, self.keys, self.selection, self.after, self.last, size,
                                            self.sink)
        return outcome.rows, None if outcome.last_key is None else {"after": to_json(outcome.last_key)}

    def advance(self, cursor: dict, rows: int, size: int) -> None:
        if cursor.get("after") is None:
            self.done = True
        else:
            self.after = from_json(self.keys, cursor["after"])


class KeyRangeWalker:
    """One integer key: each batch deletes the selected rows in (after, after + step], the step
    adapting to the observed density of selected keys so batches stay near the batch size."""

    def __init__(self, dialect, table: sa.Table, selection, step: Step, sink, after_json):
        self.dialect, self.table, self.selection, self.step, self.sink = dialect, table, selection, step, sink
        self.key = key_columns(table, step)[0]
        self.first, self.last = int(step.first_key[0]), int(step.last_key[0])
        self.after = int(after_json[0]) if after_json else self.first - 1
        self.done = self.after >= self.last
        span = self.last - self.first + 1
        self.density = max(step.rows_selected / span, 1e-6)  # selected rows per key value
        self.width = 1

    @staticmethod
    def fits(step: Step, keys) -> bool:
        return (step.walk == "key" and len(keys) == 1 and step.last_key is not None
                and isinstance(step.first_key[0], int) and isinstance(step.last_key[0], int))

    def batch(self, conn: sa.Connection, size: int, exact: bool = False) -> tuple[int, dict | None]:
        if exact:  # at most `size` rows: the LIMIT-based key-set batch, same cursor format
            outcome = self.dialect.delete_batch(conn, self.table, [self.key], self.selection,
                                                [self.after], [self.last], size, self.sink)
            self.width = max(1, (outcome.last_key[0] if outcome.last_key else self.last) - self.after)
            return outcome.rows, None if outcome.last_key is None else {"after": [int(outcome.last_key[0])]}
        self.width = max(1, int(size / self.density))
        upto = min(self.last, self.after + self.width)
        rows = self.dialect.delete_key_range(conn, self.table, self.key, self.selection, self.after, upto, self.sink)
        return rows, None if upto >= self.last else {"after": [upto]}

    def advance(self, cursor: dict, rows: int, size: int) -> None:
        if cursor.get("after") is None:
            self.done = True
            return
        self.after = cursor["after"][0]
        observed = rows / self.width
        # a dense stretch shrinks the next range at once; a sparse one widens it at most 2x
        self.density = max(observed, self.density / 2, 1e-6) if observed else self.density / 2


class BlockWalker:
    """PostgreSQL heap-block ranges (TID range scans), sized from the observed density of selected
    rows per block: tables without a key, and `walk = "blocks"`. The walk ends at the plan's block
    count or the table's size when the walk starts, whichever is larger, so rows moved past the
    plan's extent by updates since the plan are still visited."""

    def __init__(self, dialect, table: sa.Table, selection, step: Step, sink, first_block: int, blocks_now: int = 0):
        self.dialect, self.table, self.selection, self.step, self.sink = dialect, table, selection, step, sink
        self.block = first_block or 0
        self.end = max(step.blocks or 0, blocks_now)
        self.density = max(step.rows_selected / self.end, 1.0) if self.end else 1.0
        self.done = self.block >= self.end
        self.pages = 1

    def batch(self, conn: sa.Connection, size: int, exact: bool = False) -> tuple[int, dict | None]:
        self.pages = max(1, int(size / self.density))
        stop = min(self.end, self.block + self.pages)
        if exact:  # near a row cap: at most `size` rows, the cursor at the block of the last one
            rows, last_block = self.dialect.delete_block_prefix(conn, self.table, self.selection, self.block, stop,
                                                                size, self.sink)
            if last_block is not None:
                self.pages = max(1, last_block - self.block)
                return rows, {"block": last_block}
            return rows, None if stop >= self.end else {"block": stop}
        rows = self.dialect.delete_block_range(conn, self.table, self.selection, self.block, stop, self.sink)
        return rows, None if stop >= self.end else {"block": stop}

    def advance(self, cursor: dict, rows: int, size: int) -> None:
        if "block" not in cursor:
            self.done = True
            return
        self.block = cursor["block"]
        if rows:
            observed = rows / self.pages
            self.density = max(0.5 * self.density + 0.5 * observed, 0.01)


class PartitionWalker:
    """A partition wholly older than the cutoff: one batch detaches it and drops it, or moves it
    to the archive schema (restore moves it back and attaches it again)."""

    def __init__(self, dialect, table: sa.Table, step: Step, sink, archive: bool):
        self.dialect, self.table, self.step, self.sink, self.archive = dialect, table, step, sink, archive
        self.done = False

    def batch(self, conn: sa.Connection, size: int, exact: bool = False) -> tuple[int, dict | None]:
        parent = reflect_table(conn, self.step.spec["parent"])
        archive_as = None
        if self.archive:
            archive_as = f"{ARCHIVE_SCHEMA}.{self.table.name}__{self.sink.run_id}"
            self.sink.ref = json.dumps({"partition": self.step.table, "archived_as": archive_as,
                                        "parent": self.step.spec["parent"], "bound": self.step.spec["bound"]})
        return self.dialect.drop_partition(conn, parent, self.table, archive_as), None

    def advance(self, cursor: dict, rows: int, size: int) -> None:
        self.done = True
