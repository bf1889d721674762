"""Phase kinds. Each kind is one module with the same small interface:

    Config                      pydantic model of the phase's policy keys (extends PhaseBase)
    build_plan(cfg, conn, dialect, now) -> PlanParts      discovery: profile + frozen steps
    selection(table, step) -> SQLAlchemy predicate        rebuilt from the frozen plan only
    verify(conn, dialect, plan) -> list[dict]             post-conditions, one row per table
    GATE_SUITE / VERIFY_SUITE                             names of its Great Expectations suites

and, where the kind needs them:

    make_change(engine, dialect, table, step, options)    what a batch does to its key window
                                                           (default: delete, archived per policy)
    walker(dialect, table, step, sink, options, cursor)   steps that are not one table's key walk
    restore(engine, ledger, run, plan) -> RestoreReport   undo (default: put archived rows back)
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from ..errors import BadInput

KINDS = ("retention", "cascade", "reset", "retire")


def kind_module(kind: str) -> ModuleType:
    if kind not in KINDS:
        raise BadInput(f"unknown kind {kind!r} (expected one of: {', '.join(KINDS)})")
    return import_module(f"{__name__}.{kind}")


def config_model(kind: str | None, where: str):
    if kind is None:
        raise BadInput(f"{where}: missing key 'kind'")
    try:
        return kind_module(kind).Config
    except BadInput as exc:
        raise BadInput(f"{where}: key 'kind': {exc}") from None
