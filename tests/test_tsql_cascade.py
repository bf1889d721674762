"""Cascade on a real T-SQL engine (the SQL Server tier), through the CLI: a parent table with an
IDENTITY key, a foreign-key child, polymorphic children whose parents share an id space, activity
evidence; exact survivors in every table, archived, restored row for row."""

import sqlalchemy as sa

from dbsweep.ledger import Ledger
from tests.conftest import run_cli
from tests.tsql import keys, rows, tsql_policy

TABLES = ["[dbo].[Accounts]", "[dbo].[Account Notes]", "[dbo].[Attachments]", "[dbo].[Account Activity]"]

CASCADE = """
[[phase]]
name = "accounts"
kind = "cascade"
archive = "table"

[phase.parent]
table = "Accounts"
type_column = "Object Type"
type_value = 7
where = "[Status] = 'Closed'"
inactive_for = "2 years"
activity_columns = ["Updated At"]
batch_size = 20

[[phase.activity]]
table = "Account Activity"
fk_column = "Account Id"
time_column = "Occurred At"

[[phase.children]]
table = "Account Notes"
fk_column = "Account Id"
batch_size = 50

[[phase.children]]
table = "Account Activity"
fk_column = "Account Id"
batch_size = 50

[[phase.children]]
table = "Attachments"
type_column = "Object Type"
id_column = "Object Id"
type_value = 7
batch_size = 50
"""


def load_accounts(engine: sa.Engine, accounts: int = 300) -> None:
    """Accounts of two object types sharing one id space; a third are closed and idle for years,
    some of those with recent activity (kept); notes, activity and attachments under each."""
    with engine.begin() as conn:
        conn.exec_driver_sql("""CREATE TABLE [dbo].[Accounts] ([Account Id] int IDENTITY(1,1) PRIMARY KEY,
            [Object Type] int NOT NULL, [Status] nvarchar(20) NOT NULL, [Updated At] datetime2 NULL)""")
        conn.exec_driver_sql("""CREATE TABLE [dbo].[Account Notes] ([Note Id] bigint PRIMARY KEY,
            [Account Id] int NOT NULL, [Body] nvarchar(200) NULL,
            CONSTRAINT [FK Notes Account] FOREIGN KEY ([Account Id]) REFERENCES [dbo].[Accounts] ([Account Id]))""")
        conn.exec_driver_sql("""CREATE TABLE [dbo].[Account Activity] ([Id] bigint PRIMARY KEY,
            [Account Id] int NOT NULL, [Occurred At] datetime2 NOT NULL,
            CONSTRAINT [FK Activity Account] FOREIGN KEY ([Account Id]) REFERENCES [dbo].[Accounts] ([Account Id]))""")
        conn.exec_driver_sql("""CREATE TABLE [dbo].[Attachments] ([Id] bigint PRIMARY KEY, [Object Type] int NOT NULL,
            [Object Id] int NOT NULL, [Name] nvarchar(50) NULL)""")
        conn.execute(sa.text("INSERT INTO [dbo].[Accounts] ([Object Type], [Status], [Updated At]) VALUES "
                             "(:t, :s, DATEADD(day, -CAST(:d AS int), SYSUTCDATETIME()))"),
                     [{"t": 7 if i % 4 else 9, "s": "Closed" if i % 3 == 0 else "Open",
                       "d": 1000 + i if i % 2 else 30} for i in range(1, accounts + 1)])
        conn.execute(sa.text("INSERT INTO [dbo].[Account Notes] VALUES (:n, :a, :b)"),
                     [{"n": n, "a": 1 + n % accounts, "b": None if n % 5 == 0 else f"note {n}"} for n in range(1, 3 * accounts)])
        conn.execute(sa.text("INSERT INTO [dbo].[Account Activity] VALUES (:n, :a, DATEADD(day, -CAST(:d AS int), SYSUTCDATETIME()))"),
                     [{"n": n, "a": 1 + (n * 7) % accounts, "d": 10 if n % 10 == 0 else 2000} for n in range(1, accounts)])
        conn.execute(sa.text("INSERT INTO [dbo].[Attachments] VALUES (:n, :t, :o, :m)"),
                     [{"n": n, "t": 7 if n % 2 else 9, "o": 1 + n % accounts, "m": f"file {n}"} for n in range(1, 2 * accounts)])


DOOMED = """SELECT a.[Account Id] FROM [dbo].[Accounts] a WHERE a.[Object Type] = 7 AND a.[Status] = 'Closed'
    AND (a.[Updated At] IS NULL OR a.[Updated At] < DATEADD(year, -2, SYSUTCDATETIME()))
    AND NOT EXISTS (SELECT 1 FROM [dbo].[Account Activity] x WHERE x.[Account Id] = a.[Account Id]
                    AND x.[Occurred At] >= DATEADD(year, -2, SYSUTCDATETIME()))"""


def expected_survivors(engine: sa.Engine) -> dict[str, set]:
    """Written independently of dbsweep: every row except the doomed accounts and what hangs on them."""
    return {
        "[dbo].[Accounts]": keys(engine, "[dbo].[Accounts]", "[Account Id]", f"[Account Id] NOT IN ({DOOMED})"),
        "[dbo].[Account Notes]": keys(engine, "[dbo].[Account Notes]", "[Note Id]", f"[Account Id] NOT IN ({DOOMED})"),
        "[dbo].[Account Activity]": keys(engine, "[dbo].[Account Activity]", "[Id]", f"[Account Id] NOT IN ({DOOMED})"),
        "[dbo].[Attachments]": keys(engine, "[dbo].[Attachments]", "[Id]",
                                    f"NOT ([Object Type] = 7 AND [Object Id] IN ({DOOMED}))"),
    }


def survivors(engine: sa.Engine) -> dict[str, set]:
    key = {"[dbo].[Accounts]": "[Account Id]", "[dbo].[Account Notes]": "[Note Id]"}
    return {t: keys(engine, t, key.get(t, "[Id]")) for t in TABLES}


def test_cascade_keeps_every_row_it_must_and_restores_the_rest(tmp_path, ms):
    load_accounts(ms.engine)
    before = {t: rows(ms.engine, t) for t in TABLES}
    keep = expected_survivors(ms.engine)
    assert 0 < len(keep["[dbo].[Accounts]"]) < len(before["[dbo].[Accounts]"])
    path = tsql_policy(tmp_path, ms, CASCADE)
    ran = run_cli("run", path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert survivors(ms.engine) == keep  # type 9 accounts and their attachments, active accounts: all kept
    verified = run_cli("verify", path)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    (run,) = Ledger(ms.engine).list_runs()
    restored = run_cli("restore", run.run_id, "--policy", path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert {t: rows(ms.engine, t) for t in TABLES} == before  # identity values too, row for row


def test_an_archive_babelfish_could_not_restore_is_refused_at_plan_time(tmp_path, ms):
    """Babelfish refuses SET IDENTITY_INSERT on a table whose name holds a space: a purge archiving
    such a table could never be undone there, so it is refused before anything changes."""
    from dbsweep.dialects.mssql import is_babelfish

    with ms.engine.begin() as conn:
        babelfish = is_babelfish(conn)
        conn.exec_driver_sql("""CREATE TABLE [dbo].[Order List] ([Order Id] int IDENTITY(1,1) PRIMARY KEY,
            [Placed At] datetime2 NOT NULL)""")
        conn.execute(sa.text("INSERT INTO [dbo].[Order List] ([Placed At]) VALUES (DATEADD(day, -CAST(:d AS int), SYSUTCDATETIME()))"),
                     [{"d": d} for d in range(0, 40)])
    before = rows(ms.engine, "[dbo].[Order List]")
    body = """
[[phase]]
name = "purge"
kind = "retention"
table = "Order List"
time_column = "Placed At"
older_than = "30 days"
archive = "table"
"""
    result = run_cli("run", tsql_policy(tmp_path, ms, body))
    if babelfish:
        assert result.returncode == 2, result.stdout + result.stderr
        assert "IDENTITY_INSERT" in result.stderr and "phase 'purge'" in result.stderr, result.stderr
        assert rows(ms.engine, "[dbo].[Order List]") == before
    else:  # a real SQL Server takes it
        assert result.returncode == 0, result.stdout + result.stderr
