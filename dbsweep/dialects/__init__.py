"""All SQL that differs between databases lives here, one module per database."""

from __future__ import annotations

import sqlalchemy as sa

from ..errors import BadInput
from .base import Dialect


def dialect_for(bind: sa.Engine | sa.Connection) -> Dialect:
    name = bind.dialect.name
    if name == "postgresql":
        from .postgresql import PostgresDialect

        return PostgresDialect()
    if name == "sqlite":
        from .sqlite import SqliteDialect

        return SqliteDialect()
    if name == "mssql":
        from .mssql import MssqlDialect

        return MssqlDialect()
    raise BadInput(f"database dialect {name!r} is not supported (postgresql, mssql, sqlite)")


__all__ = ["Dialect", "dialect_for"]
