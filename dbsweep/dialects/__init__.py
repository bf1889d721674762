"""All SQL that differs between databases lives here, one module per database."""

from __future__ import annotations

import sqlalchemy as sa

from ..errors import BadInput
from .base import Dialect
from .discovery import DiscoveryCatalog


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


def discovery_catalog(bind: sa.Engine | sa.Connection) -> DiscoveryCatalog:
    """The catalog and statistics reads of `dbsweep discover` for this database."""
    name = bind.dialect.name
    if name == "postgresql":
        from . import pg_discover

        return pg_discover
    if name == "mssql":
        from . import mssql_discover

        return mssql_discover
    raise BadInput(f"discover reads the catalog and statistics of PostgreSQL or SQL Server, not {name}")


__all__ = ["Dialect", "DiscoveryCatalog", "dialect_for", "discovery_catalog"]
