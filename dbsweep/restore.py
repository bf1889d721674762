"""Undo a run from what it recorded: the run's kind puts back what the run changed
(`dbsweep.undo` for archived rows), under the phase's lock, and the run is marked restored."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from .dialects import dialect_for
from .errors import BadInput, DbsweepError
from .kinds import kind_named
from .ledger import RESTORED, Ledger
from .undo import RestoreReport

__all__ = ["RestoreReport", "restore_run"]


def restore_run(engine: sa.Engine, run_id: str, archive_dir: Path) -> RestoreReport:
    ledger = Ledger(engine)
    ledger.ensure()
    run = ledger.run(run_id)
    if run is None:
        raise BadInput(f"run {run_id} is not in this database's ledger")
    plan = ledger.approved_plan(run.plan_id)  # the body its gate judged, or refused (exit 3)
    if run.state == RESTORED:
        return RestoreReport(run_id, run.phase, 0, 0, 0, 0, already_restored=True, detail=run.stop_reason or "")
    dialect = dialect_for(engine)
    lock_key = f"dbsweep:{plan.policy}:{plan.phase}"
    with engine.connect() as lock_conn:
        if not dialect.try_phase_lock(lock_conn, lock_key):
            raise DbsweepError(f"phase {plan.phase!r} is running against this database; restore after it stops")
        try:
            report = kind_named(plan.kind).restore(engine, ledger, run, plan, archive_dir)
            ledger.set_state(run_id, RESTORED, report.detail)
            return report
        finally:
            dialect.release_phase_lock(lock_conn, lock_key)
            lock_conn.commit()
