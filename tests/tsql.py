"""Shapes and checks for the SQL Server tier: T-SQL tables with awkward names, and what survives."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from tests.conftest import MssqlDatabase, write_policy

EVENTS = "[dbo].[Order Events]"


def load_order_events(ms: MssqlDatabase, old: int, new: int) -> None:
    """`old` rows 10-20 days old and `new` rows 0-6 days old, keys shuffled against time; names with
    spaces and capitals, as seed 001's system has them."""
    with ms.engine.begin() as conn:
        conn.exec_driver_sql(f"""CREATE TABLE {EVENTS} ([Event Id] bigint NOT NULL PRIMARY KEY,
                                 [Payload] nvarchar(200) NULL, [Logged At] datetime2 NOT NULL)""")
        conn.exec_driver_sql(f"CREATE INDEX [Order Events by time] ON {EVENTS} ([Logged At])")
        rows = [{"k": i, "p": f"p{i}" if i % 7 else None,
                 "m": (f"-{10 * 86400 + (i * 7919) % (9 * 86400)}" if (i * 2654435761) % (old + new) < old
                       else f"-{(i * 104729) % (6 * 86400)}")}
                for i in range(1, old + new + 1)]
        conn.execute(sa.text(f"INSERT INTO {EVENTS} ([Event Id], [Payload], [Logged At]) "
                             "VALUES (:k, :p, DATEADD(second, CAST(:m AS int), SYSUTCDATETIME()))"), rows)


def keys(engine: sa.Engine, table: str = EVENTS, key: str = "[Event Id]", where: str = "1 = 1") -> set:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(f"SELECT {key} FROM {table} WHERE {where}")).scalars())


def rows(engine: sa.Engine, table: str) -> list[tuple]:
    """Every row of `table`, sorted: what must survive, compared exactly."""
    with engine.connect() as conn:
        return sorted((tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}"))), key=repr)


def checksum(engine: sa.Engine, table: str) -> tuple[int, str]:
    found = rows(engine, table)
    return len(found), hashlib.sha256(repr(found).encode()).hexdigest()


def tsql_policy(tmp_path, ms: MssqlDatabase, body: str, name: str = "tsqlpol", **kw):
    return write_policy(tmp_path, body, ms.name, name=name, env_block=ms.env_block(), **kw)


RETENTION = """
[[phase]]
name = "purge"
kind = "retention"
table = "Order Events"
time_column = "Logged At"
older_than = "7 days"
batch_size = {batch_size}
{extra}
"""
