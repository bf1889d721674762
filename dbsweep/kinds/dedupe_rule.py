"""Dedupe's rule as SQL, shared by both strategies: which row of a natural key stays, which rows
are duplicates, and the map of each duplicate to the row that stays."""

from __future__ import annotations

import sqlalchemy as sa

from .. import inbound
from ..plan import Step

IN_PLACE, REBUILD, AUTO, DROP_BACKUP = "in_place", "rebuild", "auto", "drop_backup"


def rule_order(spec: dict) -> list[tuple[str, bool]]:
    """The kept row comes first in this order: (column, descending) pairs, the key last."""
    head = [] if spec["time_column"] is None else [(spec["time_column"], spec["keep"] == "newest")]
    return head + [(name, False) for name in spec["key"]]


def same_key(a: sa.FromClause, b: sa.FromClause, spec: dict) -> sa.ColumnElement:
    if spec["nulls"] == "equal":
        return sa.and_(*(a.c[c].is_not_distinct_from(b.c[c]) for c in spec["natural_key"]))
    return sa.and_(*(a.c[c] == b.c[c] for c in spec["natural_key"]))


def precedes(a: sa.FromClause, b: sa.FromClause, order: list[tuple[str, bool]]) -> sa.ColumnElement:
    """Row a comes before row b in the rule's order (expanded: SQL Server has no row comparison)."""
    clauses = []
    for i, (name, desc) in enumerate(order):
        equal_prefix = [a.c[n] == b.c[n] for n, _ in order[:i]]
        clauses.append(sa.and_(*equal_prefix, a.c[name] > b.c[name] if desc else a.c[name] < b.c[name]))
    return sa.or_(*clauses)


def is_duplicate(row: sa.FromClause, others: sa.FromClause, spec: dict) -> sa.ColumnElement:
    """A row is a duplicate when another row of its natural key comes before it: the kept row has
    none, so deleting duplicates in any order, in any batches, never changes which row is kept."""
    return sa.exists(sa.select(sa.literal(1)).select_from(others)
                     .where(same_key(others, row, spec), precedes(others, row, rule_order(spec))).correlate_except(others))


def selection(table: sa.Table, step: Step) -> sa.ColumnElement:
    """The duplicates, less any row a foreign key points at (the plan found none such, or the batch
    moves them first: one that became referenced since stays)."""
    return sa.and_(is_duplicate(table, table.alias("dbsweep_k"), step.spec),
                   *inbound.unreferenced(table, step.spec.get("guard", [])))


def kept_row(table: sa.Table, row: sa.FromClause, spec: dict) -> sa.ScalarSelect:
    """The key of the row that stays for `row`'s natural key: the first in the rule's order."""
    kept = table.alias("dbsweep_kept")
    order = [kept.c[name].desc() if desc else kept.c[name] for name, desc in rule_order(spec)]
    return (sa.select(kept.c[spec["key"][0]]).where(same_key(kept, row, spec)).order_by(*order).limit(1)
            .scalar_subquery())


def duplicate_map(table: sa.Table, spec: dict, among: sa.Select | None = None) -> sa.Select:
    """SELECT loser, survivor: each duplicate (among the keys `among` selects, if given) and the key
    of the row its natural key keeps."""
    row = table.alias("dbsweep_dup")
    key = row.c[spec["key"][0]]
    query = sa.select(key.label("loser"), kept_row(table, row, spec).label("survivor")).where(
        is_duplicate(row, table.alias("dbsweep_k"), spec))
    return query.where(key.in_(among)) if among is not None else query
