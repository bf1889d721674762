"""Free-text `where` predicates: parsed with sqlglot, refused unless they are one boolean
expression over the table's own columns, then re-rendered with every identifier quoted."""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from .errors import BadInput

_BOOLEAN_ROOTS = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.And, exp.Or, exp.Not, exp.Is,
    exp.In, exp.Between, exp.Like, exp.ILike, exp.Boolean, exp.NullSafeEQ, exp.NullSafeNEQ,
)
_ALLOWED_FUNCTIONS = (
    exp.Lower, exp.Upper, exp.Trim, exp.Length, exp.Coalesce, exp.Substring, exp.Abs, exp.Cast,
    exp.TryCast, exp.Left, exp.Right, exp.Concat, exp.DPipe, exp.Round, exp.Floor, exp.Ceil,
)
_FORBIDDEN = (exp.Select, exp.Subquery, exp.Exists, exp.Command, exp.Anonymous, exp.Placeholder, exp.Parameter)
SQLGLOT_DIALECTS = {"postgresql": "postgres", "mssql": "tsql", "sqlite": "sqlite"}


def _root(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def check_where(text: str, columns: list[str], dialect: str) -> str:
    """Return the predicate rendered for `dialect` with quoted identifiers, or raise BadInput."""
    read = SQLGLOT_DIALECTS[dialect]
    try:
        statements = sqlglot.parse(text, read=read)
    except sqlglot.errors.ParseError as exc:
        raise BadInput(f"where {text!r} is not valid SQL: {str(exc).splitlines()[0]}") from None
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise BadInput(f"where {text!r} must be one boolean expression, not {len(statements)} statements")
    tree = statements[0]
    if not isinstance(_root(tree), _BOOLEAN_ROOTS):
        raise BadInput(f"where {text!r} is not a boolean expression")
    by_lower = {c.lower(): c for c in columns}
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            raise BadInput(f"where {text!r}: {node.key} is not allowed (only the table's own columns)")
        if isinstance(node, exp.Func) and not isinstance(node, _ALLOWED_FUNCTIONS + _BOOLEAN_ROOTS):
            raise BadInput(f"where {text!r}: function {node.sql(dialect=read)!r} is not allowed")
        if isinstance(node, exp.Column):
            if node.table:
                raise BadInput(f"where {text!r}: qualified column {node.sql(dialect=read)!r}; use bare column names")
            name = node.name
            real = name if name in columns else (None if node.this.quoted else by_lower.get(name.lower()))
            if real is None:
                raise BadInput(f"where {text!r}: unknown column '{name}' (columns: {', '.join(columns)})")
            node.set("this", exp.to_identifier(real, quoted=True))
    return tree.sql(dialect=read, identify=True)
