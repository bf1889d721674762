"""A reset rule that sets a column it (or a later rule) matches on: the rules are judged on what
the rows held before dbsweep reset them, so verify holds, a second run changes nothing, and a
restore gives every value back. Also a table whose name holds a quote, planned and run."""

from __future__ import annotations

import sqlalchemy as sa
from conftest import checksums, run_cli, write_policy
from helpers import plan_and_gate

from dbsweep import service
from dbsweep.restore import restore_run

POLICY = """
[[phase]]
name = "sync"
kind = "reset"
table = "{table}"
batch_size = 150

[[phase.rules]]
name = "cancelled"
match = {{ column = "status", equals = "CANCELLED" }}
set = {{ status = "EXISTING", synced = false }}

[[phase.rules]]
name = "everything else"
match = "otherwise"
set = {{ synced = true }}
"""


def load(engine, table: str = "orders") -> str:
    quoted = '"' + table.replace('"', '""') + '"'
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {quoted} (id int PRIMARY KEY, status text NOT NULL, synced boolean)")
        conn.exec_driver_sql(f"""INSERT INTO {quoted} SELECT g, CASE WHEN mod(g, 5) = 0 THEN 'CANCELLED' ELSE 'OPEN' END,
                                 NULL FROM generate_series(1, 2000) g""")
        conn.exec_driver_sql(f"CREATE TABLE original AS TABLE {quoted}")
    return quoted


def rows(engine, quoted: str) -> dict[int, tuple]:
    with engine.connect() as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(sa.text(f"SELECT id, status, synced FROM {quoted}"))}


def test_a_rule_that_sets_what_it_matches_is_verified_and_a_second_run_changes_nothing(tmp_path, dbname, pg):
    from expectations.runner import verification

    quoted = load(pg)
    path = write_policy(tmp_path, POLICY.format(table="orders"), dbname)
    pol, target, plan = plan_and_gate(path, "sync")
    assert plan.gate.passed and plan.rows_selected == 2000
    report = service.apply(pol, target, plan, dry_run=False)
    after = rows(pg, quoted)
    assert after == {i: ("EXISTING", False) if i % 5 == 0 else ("OPEN", True) for i in range(1, 2001)}
    verdict = verification(plan, service.verify(target, plan))
    assert verdict.passed, verdict.summary
    again = run_cli("run", path)
    assert again.returncode == 0, again.stderr
    assert "0 rows" in again.stdout or "nothing" in again.stdout, again.stdout
    assert rows(pg, quoted) == after  # exactly as the first run left them
    restore_run(target.engine, report.run_id, pol.archive_dir)
    with pg.connect() as conn:
        differ = conn.execute(sa.text(f"SELECT count(*) FROM ((TABLE {quoted} EXCEPT ALL TABLE original) UNION ALL "
                                      f"(TABLE original EXCEPT ALL TABLE {quoted})) d")).scalar()
    assert differ == 0


def test_a_table_whose_name_holds_a_quote_plans_and_runs(tmp_path, dbname, pg):
    quoted = load(pg, 'we"ird;tbl')
    path = write_policy(tmp_path, POLICY.format(table='we\\"ird;tbl'), dbname)
    planned = run_cli("plan", path)
    assert planned.returncode == 0, planned.stderr
    ran = run_cli("run", path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert rows(pg, quoted)[5] == ("EXISTING", False)
    before = checksums(pg)
    assert run_cli("run", path).returncode == 0 and checksums(pg) == before
