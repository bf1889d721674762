"""Identifiers from policies are checked against the live catalog; SQLAlchemy always quotes them."""

from __future__ import annotations

import sqlalchemy as sa

from .errors import BadInput


def split_name(qualified: str) -> tuple[str | None, str]:
    schema, dot, table = qualified.rpartition(".")
    return (schema or None) if dot else None, table


def reflect_table(conn: sa.Connection, qualified: str) -> sa.Table:
    schema, name = split_name(qualified)
    if not name:
        raise BadInput(f"empty table name {qualified!r}")
    inspector = sa.inspect(conn)
    if not inspector.has_table(name, schema=schema):
        where = f"schema '{schema}'" if schema else "the default schema"
        raise BadInput(f"table '{qualified}' not found in {where} of the target database")
    return sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn)


def column(table: sa.Table, name: str) -> sa.Column:
    if name not in table.c:
        raise BadInput(f"column '{name}' not found in table '{table.fullname}' (columns: {', '.join(table.c.keys())})")
    return table.c[name]


def primary_key(table: sa.Table) -> list[sa.Column]:
    return list(table.primary_key.columns)
