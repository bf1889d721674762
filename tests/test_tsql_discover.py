"""`dbsweep discover` on a T-SQL engine (the SQL Server tier): what its catalog gives. Seed 001's
DELTA tables, old order events, duplicated task requirements, a polymorphic child with its two
parents and a tree with several roots per group, beside a clean table that gets no proposal; the
draft plans unchanged; nothing is written. Babelfish keeps no read counters nor sizes, parses
TABLESAMPLE and reads every row: the report says so, and a large table is sampled by key windows."""

from __future__ import annotations

import json
import os

import pytest
import sqlalchemy as sa

from dbsweep.dialects import mssql_discover
from dbsweep.dialects.discovery import NotSampled
from tests.conftest import MSSQL_URL_ENV, run_cli
from tests.test_tsql_orders import load_orders
from tests.tsql import checksum

URL_ENV = "DBSWEEP_DISCOVER_URL"


def _load_shapes(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("""CREATE TABLE [task_requirements] ([id] int IDENTITY(1,1) PRIMARY KEY,
            [task_pk] int NOT NULL, [requirement_id] int NOT NULL, [created_at] datetime2 NOT NULL)""")
        conn.exec_driver_sql("""INSERT INTO [task_requirements] ([task_pk], [requirement_id], [created_at])
            SELECT TOP 3000 ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) % 6, ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) % 5,
                   SYSUTCDATETIME() FROM sys.columns a CROSS JOIN sys.columns b""")
        conn.exec_driver_sql("CREATE TABLE [applications] ([id] int PRIMARY KEY, [name] nvarchar(40) NOT NULL)")
        conn.exec_driver_sql("""CREATE TABLE [folders] ([id] int PRIMARY KEY, [application_id] int NOT NULL,
            [parent_id] int NULL, [created_at] datetime2 NOT NULL,
            CONSTRAINT [folders app] FOREIGN KEY ([application_id]) REFERENCES [applications] ([id]),
            CONSTRAINT [folders parent] FOREIGN KEY ([parent_id]) REFERENCES [folders] ([id]))""")
        conn.exec_driver_sql("INSERT INTO [applications] VALUES (1, 'one'), (2, 'two'), (3, 'three')")
        conn.exec_driver_sql("""INSERT INTO [folders] VALUES (1, 1, NULL, SYSUTCDATETIME()), (2, 1, NULL, SYSUTCDATETIME()),
            (3, 2, NULL, SYSUTCDATETIME()), (4, 1, 1, SYSUTCDATETIME()), (5, 3, NULL, SYSUTCDATETIME())""")
        conn.exec_driver_sql("CREATE TABLE [contacts] ([id] int PRIMARY KEY, [updated_at] datetime2 NOT NULL)")
        conn.exec_driver_sql("""INSERT INTO [contacts] SELECT TOP 40 ROW_NUMBER() OVER (ORDER BY (SELECT NULL)),
            SYSUTCDATETIME() FROM sys.columns""")
        conn.exec_driver_sql("""CREATE TABLE [notes] ([id] int PRIMARY KEY, [notable_type] nvarchar(20) NOT NULL,
            [notable_id] int NOT NULL, [body] nvarchar(100) NULL)""")
        conn.exec_driver_sql("""INSERT INTO [notes] SELECT TOP 60 ROW_NUMBER() OVER (ORDER BY (SELECT NULL)),
            CASE WHEN ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) % 3 = 0 THEN 'folder' ELSE 'contact' END,
            1 + ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) % 5, 'n' FROM sys.columns""")
        conn.exec_driver_sql("""CREATE TABLE [Sensor Readings] ([Reading Id] bigint PRIMARY KEY,
            [Read At] datetime2 NOT NULL, [value] float NOT NULL)""")
        conn.exec_driver_sql("CREATE INDEX [readings by time] ON [Sensor Readings] ([Read At])")
        conn.exec_driver_sql("""INSERT INTO [Sensor Readings] SELECT TOP 1000 ROW_NUMBER() OVER (ORDER BY (SELECT NULL)),
            DATEADD(day, -CAST(ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) AS int), SYSUTCDATETIME()), 1.5
            FROM sys.columns a CROSS JOIN sys.columns b""")
        conn.exec_driver_sql("""CREATE TABLE [customers] ([id] int PRIMARY KEY, [email] nvarchar(80) NOT NULL UNIQUE,
            [signed_up_at] datetime2 NOT NULL)""")
        conn.exec_driver_sql("""INSERT INTO [customers] SELECT TOP 50 ROW_NUMBER() OVER (ORDER BY (SELECT NULL)),
            CONCAT('c', ROW_NUMBER() OVER (ORDER BY (SELECT NULL)), '@example.com'), SYSUTCDATETIME() FROM sys.columns""")


def _everything(engine: sa.Engine) -> tuple[dict, int]:
    """Every table's row count and checksum, and how many objects the database holds."""
    with engine.connect() as conn:
        names = conn.execute(sa.text("SELECT name FROM sys.tables")).scalars().all()
        objects = conn.execute(sa.text("SELECT COUNT(*) FROM sys.objects")).scalar()
    return {n: checksum(engine, f"[dbo].[{n}]") for n in names}, objects


def test_discover_proposes_the_seed_shapes_and_writes_nothing(tmp_path, ms):
    load_orders(ms.engine, orders=200)
    _load_shapes(ms.engine)
    before = _everything(ms.engine)
    url = sa.make_url(os.environ[MSSQL_URL_ENV]).set(database=ms.name).render_as_string(hide_password=False)
    env = {URL_ENV: url}
    draft = tmp_path / "drafted.toml"

    done = run_cli("discover", "--url-env", URL_ENV, "--json", "--write-policy", draft, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _everything(ms.engine) == before  # no row changed, no object created
    found = json.loads(done.stdout)
    assert found["stats_reset"] is None  # Babelfish keeps no usage counters: not claimed
    by_kind: dict[str, dict] = {}
    for proposal in found["proposals"]:
        by_kind.setdefault(proposal["kind"], {})[proposal["table"]] = proposal

    retire = by_kind["retire"]
    assert set(retire) == {"order_list_delta", "order_list_lines_delta"}
    assert all(p["sure"] == "name only" and "no read counters" in p["why"] for p in retire.values())
    readings = by_kind["retention"]["sensor readings"]
    assert readings["phase"]["time_column"] == "read at" and readings["phase"]["older_than"] == "2 years"
    assert 270 <= readings["evidence"]["older_than_2_years"] <= 271  # one row a day, 1 to 1,000 days back
    assert readings["evidence"]["index"] == "readings by time" and "indexed by readings by time)" in readings["why"]
    assert readings["sure"] == "exact" and readings["evidence"]["bytes"] is None  # no size on Babelfish, not 0
    task = by_kind["dedupe"]["task_requirements"]
    assert task["phase"]["tables"][0]["natural_key"] == ["task_pk", "requirement_id"]
    assert task["evidence"]["unique_keys"] == 30 and task["evidence"]["duplicates"] == 2970
    notes = next(p for p in found["proposals"] if p["table"] == "notes" and "parents" in p["evidence"])
    assert notes["evidence"]["parents"] == {"contact": "contacts", "folder": "folders"}
    assert notes["evidence"]["rows_per_type"] == {"contact": 40, "folder": 20}
    merge = by_kind["merge"]["folders"]
    assert merge["phase"] is None and "merge needs PostgreSQL" in merge["why"]  # evidence only here
    assert merge["evidence"]["groups_with_several_roots"] == 1 and merge["evidence"]["extra_roots"] == 1
    assert not [p for p in found["proposals"] if p["table"] in ("customers", "applications") and p["phase"]]

    text = draft.read_text()
    assert url not in text and "12345678" not in text and f'url_env = "{URL_ENV}"' in text
    planned = run_cli("plan", draft, env=env)
    assert planned.returncode == 0, planned.stdout + planned.stderr  # every drafted phase plans unchanged


def test_a_large_table_on_babelfish_is_sampled_by_key_windows_and_never_read_whole(ms):
    """TABLESAMPLE on Babelfish returns every row; the key windows read about the share asked
    for, spread over the whole key range. Without an integer key the table is not sampled."""
    with ms.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE [big] ([id] int PRIMARY KEY, [code] nvarchar(10) NOT NULL)")
        conn.exec_driver_sql("""INSERT INTO [big] SELECT TOP 20000 ROW_NUMBER() OVER (ORDER BY (SELECT NULL)), 'c'
                                FROM sys.columns a CROSS JOIN sys.columns b""")
        conn.exec_driver_sql("CREATE TABLE [by code] ([code] nvarchar(10) PRIMARY KEY, [n] int NOT NULL)")
        conn.exec_driver_sql("INSERT INTO [by code] VALUES ('a', 1), ('b', 2)")
    with ms.engine.connect() as conn:
        total = conn.execute(sa.text("SELECT COUNT(*) FROM [big]")).scalar()
        rows = mssql_discover.sample(conn, "dbo", "big", ["id"], 5.0, ["id"])
        ids = [r[0] for r in rows]
        assert total > 10_000 and 0.05 * total <= len(ids) <= 0.05 * total + 30  # 5%, in 30 windows
        assert len(set(ids)) == len(ids)  # no row twice
        assert min(ids) == 1 and max(ids) > total * 29 / 30  # from the first window to the last
        with pytest.raises(NotSampled, match="integer key"):
            mssql_discover.sample(conn, "dbo", "by code", ["n"], 5.0, ["code"])
