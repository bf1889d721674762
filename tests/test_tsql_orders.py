"""Seed 001 where it lives, on a T-SQL engine (the SQL Server tier): the shipped orders policy
against a FACT_ORDER_LIST with bracketed, spaced, mixed-case names. The sync reset and its restore
row for row; the DELTA tables renamed, put back, renamed again and dropped once the grace has
passed (the grace judged against a clock the test gives); status and health."""

from datetime import timedelta

import sqlalchemy as sa

from dbsweep import service
from dbsweep.ledger import Ledger
from dbsweep.plan import utcnow
from dbsweep.policy import load_policy
from dbsweep.restore import restore_run
from dbsweep.target import connect
from tests.conftest import ROOT, run_cli
from tests.tsql import keys, rows, tsql_policy

FACT = "[dbo].[FACT_ORDER_LIST]"
TEST_PO = "GREYSON-PO-4755"


def load_orders(engine: sa.Engine, orders: int = 600) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("""CREATE TABLE [dbo].[FACT_ORDER_LIST] ([id] bigint IDENTITY(1,1) PRIMARY KEY,
            [AAG ORDER NUMBER] nvarchar(40) NOT NULL, [CUSTOMER NAME] nvarchar(60) NOT NULL, [ORDER_TYPE] nvarchar(20) NOT NULL,
            [ORDER QTY] int NOT NULL, [sync_state] nvarchar(20) NULL, [action_type] nvarchar(20) NULL,
            [UPDATED AT] datetime2 NOT NULL)""")
        conn.exec_driver_sql("""CREATE TABLE [dbo].[ORDER_LIST_DELTA] ([id] bigint PRIMARY KEY,
            [AAG ORDER NUMBER] nvarchar(40) NULL, [sync_state] nvarchar(20) NULL, [delta_at] datetime2 NULL)""")
        conn.exec_driver_sql("""CREATE TABLE [dbo].[ORDER_LIST_LINES_DELTA] ([line_uuid] uniqueidentifier PRIMARY KEY,
            [size_code] nvarchar(10) NULL, [qty] int NULL)""")
        states, actions = ["PENDING", "COMPLETED", None, "FAILED"], ["INSERT", "UPDATE", "NONE", None]
        conn.execute(sa.text(f"INSERT INTO {FACT} ([AAG ORDER NUMBER], [CUSTOMER NAME], [ORDER_TYPE], [ORDER QTY], "
                             "[sync_state], [action_type], [UPDATED AT]) VALUES (:po, :c, :t, :q, :s, :a, "
                             "DATEADD(hour, -CAST(:h AS int), SYSUTCDATETIME()))"),
                     [{"po": TEST_PO if g <= 12 else f"AAG-{g // 4:07d}", "c": ["GREYSON", "ACME OUTDOOR"][g % 2],
                       "t": "CANCELLED" if g % 19 == 0 else ("REORDER" if g % 7 == 0 else "ACTIVE"), "q": 1 + g * 13 % 500,
                       "s": states[g * 7 % 4], "a": actions[g * 11 % 4], "h": g % 5000} for g in range(1, orders + 1)])


def orders_policy(tmp_path, ms):
    body = (ROOT / "policies" / "orders.toml").read_text().split("[[phase]]", 1)[1]
    return tsql_policy(tmp_path, ms, "[[phase]]" + body, name="orders")


def tables(engine) -> set[str]:
    """From sys.tables: Babelfish's INFORMATION_SCHEMA (SQLAlchemy's list) keeps a renamed table's old name."""
    with engine.connect() as conn:
        return {name.lower() for name in conn.execute(sa.text("SELECT name FROM sys.tables WHERE SCHEMA_NAME(schema_id) = 'dbo'")).scalars()}


def test_sync_reset_of_seed_001_and_its_restore_row_for_row(tmp_path, ms):
    load_orders(ms.engine)
    before = rows(ms.engine, FACT)
    path = orders_policy(tmp_path, ms)
    planned = run_cli("plan", path, "--phase", "sync_reset")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    ran = run_cli("run", path, "--phase", "sync_reset")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    pending = keys(ms.engine, FACT, "[id]", "[sync_state] = 'PENDING' AND [action_type] IN ('INSERT', 'UPDATE')")
    assert pending == keys(ms.engine, FACT, "[id]", f"[AAG ORDER NUMBER] = '{TEST_PO}'") and len(pending) == 12
    assert keys(ms.engine, FACT, "[id]", "[sync_state] = 'EXISTING'") == keys(
        ms.engine, FACT, "[id]", f"[ORDER_TYPE] = 'CANCELLED' AND [AAG ORDER NUMBER] <> '{TEST_PO}'")
    # nothing but the two sync columns changed, in any row
    untouched = [tuple(v for i, v in enumerate(r) if i not in (5, 6)) for r in rows(ms.engine, FACT)]
    assert untouched == [tuple(v for i, v in enumerate(r) if i not in (5, 6)) for r in before]
    verified = run_cli("verify", path, "--phase", "sync_reset")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    (run,) = Ledger(ms.engine).list_runs()
    restored = run_cli("restore", run.run_id, "--policy", path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert rows(ms.engine, FACT) == before  # NULL states and actions too

    status = run_cli("status", path)
    assert status.returncode == 0 and "restored" in status.stdout, status.stdout + status.stderr
    health = run_cli("health", path)
    assert health.returncode in (0, 1) and "FACT_ORDER_LIST" in health.stdout, health.stdout + health.stderr


def _retire(path, now=None):
    from expectations.runner import gate

    policy = load_policy(path)
    target = connect(policy)
    plan = service.make_plan(policy, "retire_delta", target, now=now)
    service.record_gate(target, plan, gate(plan))
    report = service.apply(policy, target, plan, dry_run=False) if plan.gate.passed else None
    return plan, report, target


def test_retire_renames_restores_renames_again_and_drops_after_the_grace(tmp_path, ms):
    load_orders(ms.engine, orders=50)
    fact = rows(ms.engine, FACT)
    path = orders_policy(tmp_path, ms)
    today = f"{utcnow():%Y%m%d}"
    renamed = {f"order_list_delta__retired_{today}", f"order_list_lines_delta__retired_{today}"}
    plan, report, target = _retire(path)
    assert plan.gate.passed and [s.spec["action"] for s in plan.steps] == ["rename", "rename"], plan.gate.summary
    assert renamed <= tables(ms.engine) and not {"order_list_delta", "order_list_lines_delta"} & tables(ms.engine)

    restore_run(target.engine, report.run_id, tmp_path)  # the gradual disable, undone
    assert {"order_list_delta", "order_list_lines_delta"} <= tables(ms.engine) and not renamed & tables(ms.engine)

    _retire(path)
    waiting, nothing, _ = _retire(path)  # within the grace: nothing to do yet
    assert waiting.steps == [] and all(p["action"] == "wait" for p in waiting.profile)
    plan, report, _ = _retire(path, now=utcnow() + timedelta(days=8))
    assert [s.spec["action"] for s in plan.steps] == ["drop", "drop"]
    assert not renamed & tables(ms.engine) and "fact_order_list" in tables(ms.engine)
    assert rows(ms.engine, FACT) == fact  # the live table, untouched


def test_a_retire_that_archives_says_before_anything_changes_when_the_server_cannot_move_tables(tmp_path, ms):
    from dbsweep.dialects.mssql import is_babelfish

    load_orders(ms.engine, orders=20)
    with ms.engine.connect() as conn:
        babelfish = is_babelfish(conn)
    before = tables(ms.engine)
    body = '[[phase]]\nname = "retire_delta"\nkind = "retire"\ntables = ["ORDER_LIST_DELTA"]\narchive = true\n'
    result = run_cli("run", tsql_policy(tmp_path, ms, body, name="orders"))
    if babelfish:
        assert result.returncode == 2 and "ALTER SCHEMA" in result.stderr, result.stdout + result.stderr
        assert "phase 'retire_delta'" in result.stderr and tables(ms.engine) == before
    else:
        assert result.returncode == 0, result.stdout + result.stderr
