"""Pieces several kinds share: how a table is walked, and the shape a kind's plan takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..catalog import primary_key
from ..dialects import Dialect
from ..errors import BadInput
from ..keys import to_json
from ..plan import Step

ROWID = "rowid"


@dataclass
class PlanParts:
    steps: list[Step]
    profile: list[dict[str, Any]]
    cutoff: datetime | None = None
    histogram: dict[str, int] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)  # preconditions, for kinds gated on them


def key_columns(table: sa.Table, step: Step) -> list[sa.ColumnElement]:
    if step.key == [ROWID] and ROWID not in table.c:
        return [sa.column(ROWID, sa.Integer)]
    return [table.c[name] for name in step.key]


def walk_step(conn: sa.Connection, dialect: Dialect, table: sa.Table, selection: sa.ColumnElement,
              rows_selected: int, batch_size: int, spec: dict[str, Any], walk: str = "key") -> Step:
    """Decide how to walk `table`: key-set over its primary key, heap blocks (PostgreSQL: a table
    with no key, or `walk = "blocks"`), or SQLite's rowid; record the walk's bounds among the
    selected rows, frozen in the plan (a block walk keeps the key range too, for verify)."""
    common = dict(table=table.fullname, rows_selected=rows_selected, batch_size=batch_size, spec=spec)
    keys = [c.name for c in primary_key(table)]
    if walk == "blocks" and not dialect.supports_row_locator:
        raise BadInput(f"walk = \"blocks\" (table '{table.fullname}') needs PostgreSQL; {dialect.name} walks by key")
    if (walk == "blocks" or not keys) and dialect.supports_row_locator:
        step = Step(walk="block", key=keys, blocks=dialect.table_blocks(conn, table), **common)
        return _with_key_range(conn, table, selection, step) if keys else step
    if not keys and dialect.name == "sqlite":
        keys = [ROWID]
    if not keys:
        raise BadInput(f"table '{table.fullname}' has no primary key; dbsweep needs one on {dialect.name}")
    return _with_key_range(conn, table, selection, Step(walk="key", key=keys, **common))


def _with_key_range(conn: sa.Connection, table: sa.Table, selection: sa.ColumnElement, step: Step) -> Step:
    columns = key_columns(table, step)
    if step.rows_selected:
        first = conn.execute(sa.select(*columns).where(selection).order_by(*columns).limit(1)).first()
        last = conn.execute(sa.select(*columns).where(selection).order_by(*[c.desc() for c in columns]).limit(1)).first()
        step.first_key, step.last_key = to_json(first), to_json(last)
    return step
