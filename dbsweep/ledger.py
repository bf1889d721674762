"""The ledger: plans, runs and batches recorded in the target database (schema `dbsweep`),
in the same transaction as the change each batch makes."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from typing import ClassVar

import sqlalchemy as sa

from .dialects import dialect_for
from .errors import BadInput, GateRefused
from .plan import GateVerdict, PhasePlan, as_utc, body_hash, utcnow

RUNNING, FINISHED, STOPPED, FAILED, RESTORED = "running", "finished", "stopped", "failed", "restored"
REFUSED = "refused"  # the gate (or its age, or the plan's provenance) refused a real run: nothing changed
ABANDONED = "abandoned"  # given up by the operator: never resumed, still undoable from what it recorded
UNFINISHED = (RUNNING, STOPPED, FAILED)


def _tables(schema: str | None) -> tuple[sa.Table, sa.Table, sa.Table]:
    prefix = "" if schema else "dbsweep_"
    md = sa.MetaData(schema=schema)
    plans = sa.Table(
        f"{prefix}plans", md,
        sa.Column("plan_id", sa.String(32), primary_key=True),
        sa.Column("policy", sa.String(200), nullable=False),
        sa.Column("phase", sa.String(200), nullable=False),
        sa.Column("env", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("gate_passed", sa.Boolean),
        sa.Column("gate_at", sa.DateTime(timezone=True)),
        sa.Column("gate_report", sa.Text),
        sa.Column("gate_body_sha256", sa.String(64)),  # the body the gate judged: what may run
    )
    runs = sa.Table(
        f"{prefix}runs", md,
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("plan_id", sa.String(32), nullable=False, index=True),
        sa.Column("policy", sa.String(200), nullable=False),
        sa.Column("phase", sa.String(200), nullable=False),
        sa.Column("env", sa.String(100), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("stop_reason", sa.Text),  # dbsweep's own words (a restore's summary): never too long to keep
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("rows_done", sa.BigInteger, nullable=False, default=0),
        sa.Column("batches_done", sa.Integer, nullable=False, default=0),
        sa.Column("cursor", sa.Text),
        sa.Column("cursor_sha256", sa.String(64)),  # the seal of the cursor as dbsweep wrote it
    )
    batches = sa.Table(
        f"{prefix}batches", md,
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("batch_no", sa.Integer, primary_key=True),
        sa.Column("table_name", sa.String(400), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("cursor", sa.Text),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("archive", sa.Text),  # archive table name or Parquet file (relative to the archive dir)
        sa.Column("restored_at", sa.DateTime(timezone=True)),
        sa.Column("seal", sa.String(64)),  # the seal of the row's run, number, table, rows, cursor and archive
    )
    return plans, runs, batches


def seal(*parts) -> str:
    """The SHA-256 of what dbsweep wrote, checked when it is read back: a row edited outside dbsweep
    (or half written by a broken tool) is refused instead of trusted."""
    return body_hash(json.dumps(parts, default=str, separators=(",", ":")))


def batch_seal(run_id, batch_no, table_name, rows, cursor, archive) -> str:
    return seal("batch", run_id, int(batch_no), table_name, int(rows), cursor, archive)


@dataclass
class RunRecord:
    run_id: str
    plan_id: str
    policy: str
    phase: str
    env: str
    state: str
    stop_reason: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    rows_done: int
    batches_done: int
    cursor: dict | None
    cursor_sha256: str | None = None
    cursor_problem: str | None = None  # why the cursor read back cannot be trusted, if it cannot

    def trusted_cursor(self, steps: int) -> dict:
        """The cursor to resume from, refused (exit 3) unless it is the one dbsweep sealed and it
        names a step of the plan."""
        problem = self.cursor_problem
        if problem is None and not (isinstance(self.cursor, dict) and isinstance(self.cursor.get("step"), int)
                                    and 0 <= self.cursor["step"] <= steps):
            problem = f"it names no step of the plan ({steps} steps)"
        if problem:
            raise GateRefused(f"run {self.run_id}: the ledger's cursor cannot be trusted ({problem}); nothing was run; "
                              f"give the run up with `dbsweep abandon {self.run_id}` and plan again")
        return self.cursor


# in a batch's archive record: this step cannot be undone (kept there as the record of what it did)
NOT_UNDOABLE_KEY = "undoable"


class Ledger:
    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.dialect = dialect_for(engine)
        self.plans, self.runs, self.batches = _tables(self.dialect.ledger_schema)

    def exists(self) -> bool:
        """Whether this database has a ledger (looked at without creating one)."""
        return sa.inspect(self.engine).has_table(self.runs.name, schema=self.runs.schema)

    def rows_for_plan(self, plan_id: str) -> int:
        """Rows changed by the plan's runs, less the batches restored since."""
        b, r = self.batches.c, self.runs.c
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(b.rows), 0))
                                    .select_from(self.batches.join(self.runs, b.run_id == r.run_id))
                                    .where(r.plan_id == plan_id, b.restored_at.is_(None))).scalar())

    # databases whose ledger this process brought up to date: a later ensure() only checks that its
    # tables are still there (one catalog query instead of reading every column of three tables)
    _current: ClassVar[set[str]] = set()

    def ensure(self) -> None:
        key = self.engine.url.render_as_string(hide_password=True)
        with self.engine.begin() as conn:
            names = {t.name for t in (self.plans, self.runs, self.batches)}
            if key in Ledger._current and names <= set(self.dialect.table_names(conn, self.runs.schema)):
                return
            if self.dialect.ledger_schema:
                self.dialect.ensure_schema(conn, self.dialect.ledger_schema)
            self.plans.metadata.create_all(conn, checkfirst=True)
            added = self._add_missing_columns(conn)
            if "cursor_sha256" in added or "seal" in added:
                self._seal_rows_of_an_earlier_release(conn, added)
        Ledger._current.add(key)

    def _add_missing_columns(self, conn: sa.Connection) -> set[str]:
        """Ledgers made by an earlier dbsweep lack the newer nullable columns: add them."""
        inspector = sa.inspect(conn)
        added = set()
        for table in (self.plans, self.runs, self.batches):
            existing = {c["name"]: c["type"] for c in inspector.get_columns(table.name, schema=table.schema)}
            for column in table.c:
                if column.name not in existing and column.nullable:
                    self.dialect.add_column(conn, table, column)
                    added.add(column.name)
                elif isinstance(column.type, sa.Text) and getattr(existing.get(column.name), "length", None):
                    self.dialect.widen_to_text(conn, table, column)  # an earlier release's varchar(200)
        return added

    def _seal_rows_of_an_earlier_release(self, conn: sa.Connection, added: set[str]) -> None:
        """Rows written before seals existed are sealed once, as the columns are added (a seal
        cleared later is never filled in again: that row is refused)."""
        if "cursor_sha256" in added:
            for run_id, cursor in conn.execute(sa.select(self.runs.c.run_id, self.runs.c.cursor)).all():
                conn.execute(sa.update(self.runs).where(self.runs.c.run_id == run_id).values(
                    cursor_sha256=seal("cursor", run_id, cursor)))
        if "seal" in added:
            b = self.batches.c
            for row in conn.execute(sa.select(b.run_id, b.batch_no, b.table_name, b.rows, b.cursor, b.archive)).all():
                conn.execute(sa.update(self.batches).where(b.run_id == row.run_id, b.batch_no == row.batch_no).values(
                    seal=batch_seal(*row)))

    # plans -----------------------------------------------------------------------------
    def save_plan(self, plan: PhasePlan) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.insert(self.plans).values(
                plan_id=plan.plan_id, policy=plan.policy, phase=plan.phase, env=plan.env,
                created_at=plan.created_at, body=plan.body(),
            ))

    def record_gate(self, plan_id: str, verdict: GateVerdict) -> None:
        """The verdict, with the hash of the stored body it was given on: the plan that may run."""
        with self.engine.begin() as conn:
            body = conn.execute(sa.select(self.plans.c.body).where(self.plans.c.plan_id == plan_id)).scalar()
            if body is None:
                raise BadInput(f"plan {plan_id} is not in this database's ledger")
            conn.execute(sa.update(self.plans).where(self.plans.c.plan_id == plan_id).values(
                gate_passed=verdict.passed, gate_at=verdict.checked_at, gate_report=verdict.model_dump_json(),
                gate_body_sha256=body_hash(body),
            ))

    def approved_plan(self, plan_id: str) -> PhasePlan:
        """The stored plan the gate judged, with its verdict; refused unless the stored body is still
        the one the verdict was recorded for (a ledger row edited after the gate never runs)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.plans).where(self.plans.c.plan_id == plan_id)).first()
        if row is None:
            raise GateRefused(f"plan {plan_id} is not in this database's ledger; make the plan against this database")
        if row.gate_report is None:
            raise GateRefused(f"plan {plan_id}: the gate has not run on it")
        if row.gate_body_sha256 != body_hash(row.body):
            raise GateRefused(f"plan {plan_id}: the ledger's copy changed after its gate ran; make a new plan")
        try:
            return self._plan(row)
        except ValueError as exc:
            raise GateRefused(f"plan {plan_id}: the ledger's copy is not a dbsweep plan ({str(exc).splitlines()[0]})") from None

    def load_plan(self, plan_id: str) -> PhasePlan | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.plans).where(self.plans.c.plan_id == plan_id)).first()
        return None if row is None else self._plan(row)

    def latest_plan(self, policy: str, phase: str, env: str) -> PhasePlan | None:
        p = self.plans.c
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(self.plans).where(p.policy == policy, p.phase == phase, p.env == env)
                .order_by(p.created_at.desc()).limit(1)
            ).first()
        return None if row is None else self._plan(row)

    def _plan(self, row) -> PhasePlan:
        plan = PhasePlan.model_validate_json(row.body)
        if row.gate_report:
            plan.gate = GateVerdict.model_validate_json(row.gate_report)
        return plan

    # runs ------------------------------------------------------------------------------
    def start_run(self, plan: PhasePlan) -> RunRecord:
        now = utcnow()
        run_id = uuid.uuid4().hex[:12]
        cursor = json.dumps({"step": 0, "after": None})
        values = dict(
            run_id=run_id, plan_id=plan.plan_id, policy=plan.policy, phase=plan.phase,
            env=plan.env, state=RUNNING, started_at=now, updated_at=now, rows_done=0, batches_done=0,
            cursor=cursor, cursor_sha256=seal("cursor", run_id, cursor),
        )
        with self.engine.begin() as conn:
            conn.execute(sa.insert(self.runs).values(**values))
        return self.run(values["run_id"])

    def record_refusal(self, plan: PhasePlan, reason: str) -> str:
        """A refused real run is a stop too: kept in the ledger with its reason, having changed nothing."""
        now = utcnow()
        run_id = uuid.uuid4().hex[:12]
        with self.engine.begin() as conn:
            conn.execute(sa.insert(self.runs).values(
                run_id=run_id, plan_id=plan.plan_id, policy=plan.policy, phase=plan.phase, env=plan.env,
                state=REFUSED, stop_reason=reason[:200], started_at=now, updated_at=now, finished_at=now,
                rows_done=0, batches_done=0, cursor=None,
            ))
        return run_id

    def run(self, run_id: str) -> RunRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.runs).where(self.runs.c.run_id == run_id)).first()
        return None if row is None else self._run(row)

    def find_run(self, run_id: str) -> RunRecord | None:
        """Like run(), but None when this database has no ledger yet (and creates none)."""
        if not sa.inspect(self.engine).has_table(self.runs.name, schema=self.runs.schema):
            return None
        return self.run(run_id)

    def unfinished_run(self, policy: str, phase: str, env: str, plan_id: str | None = None) -> RunRecord | None:
        r = self.runs.c
        query = sa.select(self.runs).where(r.policy == policy, r.phase == phase, r.env == env, r.state.in_(UNFINISHED))
        if plan_id is not None:
            query = query.where(r.plan_id == plan_id)
        with self.engine.connect() as conn:
            row = conn.execute(query.order_by(r.started_at.desc()).limit(1)).first()
        return None if row is None else self._run(row)

    def finished_run(self, plan_id: str) -> RunRecord | None:
        r = self.runs.c
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.runs).where(r.plan_id == plan_id, r.state.in_((FINISHED, RESTORED)))
                               .order_by(r.started_at.desc()).limit(1)).first()
        return None if row is None else self._run(row)

    def plan_ids(self, policy: str, env: str) -> set[str]:
        p = self.plans.c
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(p.plan_id).where(p.policy == policy, p.env == env)).scalars())

    def latest_applied_run(self, policy: str, phase: str, env: str) -> RunRecord | None:
        """The phase's latest run that went to the end (finished, or restored since): the change
        `verify` judges, whatever plans `plan` or `check` recorded after it."""
        r = self.runs.c
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.runs).where(r.policy == policy, r.phase == phase, r.env == env,
                                                          r.state.in_((FINISHED, RESTORED)))
                               .order_by(r.started_at.desc()).limit(1)).first()
        return None if row is None else self._run(row)

    def restored_run(self, plan_id: str) -> RunRecord | None:
        """The plan's latest run, if it was restored (undone) and nothing ran it again since."""
        r = self.runs.c
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.runs).where(r.plan_id == plan_id, r.state != REFUSED)
                               .order_by(r.started_at.desc()).limit(1)).first()
        return None if row is None or row.state != RESTORED else self._run(row)

    def list_runs(self, policy: str | None = None, limit: int | None = 50) -> list[RunRecord]:
        query = sa.select(self.runs).order_by(self.runs.c.started_at.desc()).limit(limit)
        if policy is not None:
            query = query.where(self.runs.c.policy == policy)
        with self.engine.connect() as conn:
            return [self._run(row) for row in conn.execute(query)]

    def abandon(self, run_id: str, reason: str) -> RunRecord:
        """Give up an unfinished run: it is never resumed, and what it recorded stays undoable."""
        run = self.find_run(run_id)
        if run is None:
            raise BadInput(f"run {run_id} is not in this database's ledger")
        if run.state not in UNFINISHED:
            raise BadInput(f"run {run_id} is {run.state}, not unfinished: nothing to abandon")
        self.set_state(run_id, ABANDONED, reason[:200])
        return self.run(run_id)

    def set_state(self, run_id: str, state: str, reason: str | None) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(sa.update(self.runs).where(self.runs.c.run_id == run_id).values(
                state=state, stop_reason=reason, updated_at=now, finished_at=now if state in (FINISHED, ABANDONED) else None,
            ))

    def record_batch(self, conn: sa.Connection, run: RunRecord, table: str, rows: int, cursor: dict,
                     started_at: datetime, duration_ms: float, archive: str | None = None) -> None:
        """Inside the batch's own transaction: the batch row and the run's new cursor commit with the
        change. The caller updates `run` in memory only once that transaction has committed."""
        batch_no = run.batches_done + 1
        text = json.dumps(cursor)
        record = sa.insert(self.batches).values(
            run_id=run.run_id, batch_no=batch_no, table_name=table, rows=rows, cursor=text,
            started_at=started_at, duration_ms=duration_ms, archive=archive,
            seal=batch_seal(run.run_id, batch_no, table, rows, text, archive),
        )
        advance = sa.update(self.runs).where(self.runs.c.run_id == run.run_id).values(
            rows_done=self.runs.c.rows_done + rows, batches_done=batch_no, cursor=text,
            cursor_sha256=seal("cursor", run.run_id, text), updated_at=utcnow(),
        )
        if self.dialect.dml_in_cte:  # one round trip instead of two
            conn.execute(advance.add_cte(record.cte("recorded")))
        else:
            conn.execute(record)
            conn.execute(advance)

    def undoable(self, run_ids: list[str]) -> set[str]:
        """Runs that recorded something to undo them with (archives, previous values, renames), and
        no step that cannot be undone (a table dropped without an archive)."""
        b = self.batches.c
        with self.engine.connect() as conn:
            found = set(conn.execute(sa.select(b.run_id).where(b.run_id.in_(run_ids), b.archive.is_not(None),
                                                               b.restored_at.is_(None)).distinct()).scalars())
            flagged = conn.execute(sa.select(b.run_id, b.archive).where(
                b.run_id.in_(run_ids), b.archive.contains(f'"{NOT_UNDOABLE_KEY}"'))).all()
        return found - {run_id for run_id, record in flagged
                        if record.startswith("{") and json.loads(record).get(NOT_UNDOABLE_KEY) is False}

    def renamed_at(self, name: str) -> datetime | None:
        """When dbsweep last renamed a table to `name` (a retire's step one): the end of the batch
        that did it, or None when this ledger has no such rename."""
        b = self.batches.c
        if not sa.inspect(self.engine).has_table(self.batches.name, schema=self.batches.schema):
            return None
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(b.archive, b.started_at, b.duration_ms).where(
                b.archive.contains('"renamed_to"'), b.restored_at.is_(None))).all()
        moments = []
        for archive, started_at, duration_ms in rows:
            try:
                record = json.loads(archive)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("renamed_to") == name:
                moments.append(as_utc(started_at) + timedelta(milliseconds=float(duration_ms)))
        return max(moments, default=None)

    def run_ids_for_plan(self, plan_id: str) -> list[str]:
        r = self.runs.c
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(r.run_id).where(r.plan_id == plan_id)).scalars())

    def archived_batches(self, run_id: str) -> list:
        """Batches of a run that archived rows and are not yet restored, in order; refused (exit 3)
        when any is not as dbsweep sealed it (its table, rows or archive edited since)."""
        b = self.batches.c
        with self.engine.connect() as conn:
            rows = list(conn.execute(sa.select(self.batches).where(
                b.run_id == run_id, b.archive.is_not(None), b.restored_at.is_(None),
            ).order_by(b.batch_no)))
        broken = [row.batch_no for row in rows
                  if row.seal != batch_seal(row.run_id, row.batch_no, row.table_name, row.rows, row.cursor, row.archive)]
        if broken:
            raise GateRefused(f"run {run_id}: ledger batches {', '.join(map(str, broken[:10]))} are not as dbsweep "
                              "recorded them (edited outside dbsweep); nothing was restored")
        return rows

    def mark_restored(self, conn: sa.Connection, run_id: str, batch_no: int) -> None:
        conn.execute(sa.update(self.batches).where(
            self.batches.c.run_id == run_id, self.batches.c.batch_no == batch_no).values(restored_at=utcnow()))

    def rows_by_table(self, policy: str) -> dict[tuple[str, str], int]:
        """Rows changed per (phase, table) by the policy's runs that were not undone since."""
        b, r = self.batches.c, self.runs.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(r.phase, b.table_name, sa.func.sum(b.rows))
                                .select_from(self.batches.join(self.runs, b.run_id == r.run_id))
                                .where(r.policy == policy, r.state != RESTORED, b.restored_at.is_(None))
                                .group_by(r.phase, b.table_name)).all()
        return {(phase, table): int(total or 0) for phase, table, total in rows}

    def batch_durations(self, run_id: str) -> list[float]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(self.batches.c.duration_ms).where(self.batches.c.run_id == run_id))]

    def ledger_rows(self, run_id: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(self.batches.c.rows), 0)).where(self.batches.c.run_id == run_id)
            ).scalar())

    def _run(self, row) -> RunRecord:
        """A run as read back: its cursor parsed, and judged against its seal (never trusted)."""
        data = dict(row._mapping)
        text = data["cursor"]
        try:
            data["cursor"] = json.loads(text) if text else None
        except ValueError:
            data["cursor"], data["cursor_problem"] = None, "not JSON"
        if data.get("cursor_problem") is None and text is not None \
                and data.get("cursor_sha256") != seal("cursor", data["run_id"], text):
            data["cursor_problem"] = "not the one dbsweep wrote"
        return RunRecord(**data)
