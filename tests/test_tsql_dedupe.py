"""Dedupe in place on a real T-SQL engine (the SQL Server tier), through the CLI: the oldest row of
each natural key kept (NULLs in the key counted distinct: every such row kept), the unique index
added and refusing a new duplicate, and restore putting back every removed row, identity values too."""

import pytest
import sqlalchemy as sa

from dbsweep.ledger import Ledger
from tests.conftest import run_cli
from tests.tsql import rows, tsql_policy

PHOTOS = "[dbo].[TaskPhotos]"

DEDUPE = """
[[phase]]
name = "dedupe"
kind = "dedupe"
archive = "table"
batch_size = 150

[[phase.tables]]
table = "TaskPhotos"
natural_key = ["Task Pk", "Photo Id"]
keep = "oldest"
time_column = "Created At"
strategy = "in_place"
"""


def load_photos(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"""CREATE TABLE {PHOTOS} ([Id] bigint IDENTITY(1,1) PRIMARY KEY, [Task Pk] int NULL,
            [Photo Id] nvarchar(40) NULL, [Created At] datetime2 NOT NULL)""")
        conn.execute(sa.text(f"INSERT INTO {PHOTOS} ([Task Pk], [Photo Id], [Created At]) "
                             "VALUES (:t, :p, DATEADD(minute, -CAST(:m AS int), SYSUTCDATETIME()))"),
                     [{"t": None if i % 50 == 0 else i % 97, "p": None if i % 41 == 0 else f"ph{i % 13}",
                       "m": (i * 7919) % 10007} for i in range(1, 2001)])


def expected_survivors(before: list[tuple]) -> set:
    """Written independently of dbsweep: per key without NULLs, the oldest row (lowest id on a tie)."""
    kept, best = set(), {}
    for ident, task, photo, at in before:
        if task is None or photo is None:
            kept.add(ident)
        elif (task, photo) not in best or (at, ident) < best[(task, photo)]:
            best[(task, photo)] = (at, ident)
    return kept | {ident for _, ident in best.values()}


def test_dedupe_in_place_keeps_the_oldest_adds_the_index_and_restores(tmp_path, ms):
    load_photos(ms.engine)
    before = rows(ms.engine, PHOTOS)
    keep = expected_survivors(before)
    assert len(keep) < len(before)
    path = tsql_policy(tmp_path, ms, DEDUPE)
    ran = run_cli("run", path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert {r[0] for r in rows(ms.engine, PHOTOS)} == keep
    assert [r for r in rows(ms.engine, PHOTOS) if r[0] in keep] == [r for r in before if r[0] in keep]
    verified = run_cli("verify", path)
    assert verified.returncode == 0 and "constraint valid" in verified.stdout, verified.stdout + verified.stderr
    task, photo = next((t, p) for _, t, p, _ in before if t is not None and p is not None)
    with pytest.raises(sa.exc.IntegrityError), ms.engine.begin() as conn:  # the database refuses a new duplicate
        conn.execute(sa.text(f"INSERT INTO {PHOTOS} ([Task Pk], [Photo Id], [Created At]) VALUES (:t, :p, SYSUTCDATETIME())"),
                     {"t": task, "p": photo})

    (run,) = Ledger(ms.engine).list_runs()
    restored = run_cli("restore", run.run_id, "--policy", path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert rows(ms.engine, PHOTOS) == before
    with ms.engine.begin() as conn:  # the index is gone with the undo: duplicates may come in again
        conn.execute(sa.text(f"INSERT INTO {PHOTOS} ([Task Pk], [Photo Id], [Created At]) VALUES (:t, :p, SYSUTCDATETIME())"),
                     {"t": task, "p": photo})
