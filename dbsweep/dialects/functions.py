"""SQL functions whose spelling differs by database, as SQLAlchemy constructs."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles


class latest_of(sa.sql.functions.GenericFunction):
    """The largest non-NULL argument, NULL when all are: greatest() on PostgreSQL; elsewhere
    (SQLite's max(a, b) is NULL if any is; SQL Server before 2022 has no GREATEST) the aggregate
    over the arguments as rows."""

    inherit_cache = True
    name = "latest_of"


@compiles(latest_of)
def _latest_of_generic(element, compiler, **kw):
    rows = " UNION ALL ".join(f"SELECT {compiler.process(arg, **kw)} AS v" for arg in element.clauses)
    return f"(SELECT max(v) FROM ({rows}) AS latest)"


@compiles(latest_of, "postgresql")
def _latest_of_postgresql(element, compiler, **kw):
    return f"greatest({compiler.process(element.clause_expr.element, **kw)})"
