"""Key-set predicates over one or more key columns, written so every dialect can use an index."""

from __future__ import annotations

import sqlalchemy as sa


def after_key(keys: list[sa.Column], values: list) -> sa.ColumnElement:
    """(k1, k2, ...) > (v1, v2, ...) expanded, since SQL Server has no row-value comparison."""
    clauses = []
    for i, column in enumerate(keys):
        equal_prefix = [keys[j] == values[j] for j in range(i)]
        clauses.append(sa.and_(*equal_prefix, column > values[i]))
    return sa.or_(*clauses) if len(clauses) > 1 else clauses[0]


def up_to_key(keys: list[sa.Column], values: list) -> sa.ColumnElement:
    """(k1, k2, ...) <= (v1, v2, ...) expanded the same way."""
    clauses = []
    for i, column in enumerate(keys):
        equal_prefix = [keys[j] == values[j] for j in range(i)]
        last = i == len(keys) - 1
        clauses.append(sa.and_(*equal_prefix, column <= values[i] if last else column < values[i]))
    return sa.or_(*clauses) if len(clauses) > 1 else clauses[0]


def to_json(values) -> list | None:
    """Key values as JSON-safe scalars (uuid, datetime, decimal become strings)."""
    if values is None:
        return None
    return [v if isinstance(v, (int, str, float)) or v is None else str(v) for v in values]


def from_json(keys: list[sa.Column], values: list | None) -> list | None:
    if values is None:
        return None
    out = []
    for column, value in zip(keys, values):
        try:
            python_type = column.type.python_type
        except NotImplementedError:
            python_type = None
        if value is not None and python_type is not None and not isinstance(value, python_type):
            if python_type.__name__ == "datetime":
                from datetime import datetime

                value = datetime.fromisoformat(value)
            else:
                value = python_type(value)
        out.append(value)
    return out
