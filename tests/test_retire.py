"""Kind `retire` on real PostgreSQL: each precondition refuses and names the object; rename,
restore, rename again, then drop once the grace period has passed."""

from datetime import timedelta

import pytest
import sqlalchemy as sa

from dbsweep import service
from dbsweep.demo import orders
from dbsweep.errors import BadInput
from dbsweep.ledger import Ledger
from dbsweep.plan import utcnow
from dbsweep.policy import load_policy
from dbsweep.restore import restore_run
from dbsweep.target import connect
from tests.conftest import count, write_policy

RETIRE = """
[[phase]]
name = "retire_delta"
kind = "retire"
tables = ["ORDER_LIST_DELTA", "ORDER_LIST_LINES_DELTA"]
grace = "7 days"
{extra}
"""


def policy(tmp_path, dbname, extra=""):
    return write_policy(tmp_path, RETIRE.format(extra=extra), dbname, name="orders")


def tables(engine) -> set[str]:
    with engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def plan_gate_apply(path, now=None, apply=True):
    from expectations.runner import gate

    pol = load_policy(path)
    target = connect(pol)
    plan = service.make_plan(pol, "retire_delta", target, now=now)
    service.record_gate(target, plan, gate(plan))
    report = service.apply(pol, target, plan, dry_run=False) if apply and plan.gate.passed else None
    return plan, report, target


@pytest.mark.parametrize("blocker, named", [
    ("""INSERT INTO "ORDER_LIST_DELTA" VALUES (1, 'AAG-1', 'PENDING', 'INSERT', now())""", "1 rows"),
    ("""CREATE VIEW delta_view AS SELECT * FROM "ORDER_LIST_DELTA\"""", "view delta_view"),
    ("""CREATE MATERIALIZED VIEW delta_mv AS SELECT count(*) FROM "ORDER_LIST_DELTA\"""", "materialized view delta_mv"),
    ("""CREATE TABLE delta_child (id bigint REFERENCES "ORDER_LIST_DELTA" (id))""", "foreign key delta_child_id_fkey on delta_child"),
    ("""CREATE FUNCTION copy_to_delta() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO "ORDER_LIST_DELTA" (id) VALUES (NEW.id); RETURN NEW; END $$;
        CREATE TRIGGER to_delta AFTER INSERT ON "FACT_ORDER_LIST" FOR EACH ROW EXECUTE FUNCTION copy_to_delta()""",
     "routine copy_to_delta()"),
    ("""CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
        CREATE TRIGGER stamp_delta BEFORE INSERT ON "ORDER_LIST_DELTA" FOR EACH ROW EXECUTE FUNCTION stamp()""",
     "trigger stamp_delta on \"ORDER_LIST_DELTA\""),
])
def test_each_precondition_refuses_and_names_the_object(tmp_path, pg, dbname, blocker, named):
    orders.create(pg, scale=0.02)
    with pg.begin() as conn:
        conn.exec_driver_sql(blocker)
    before = tables(pg)
    plan, report, _ = plan_gate_apply(policy(tmp_path, dbname))
    assert not plan.gate.passed and report is None
    assert named in plan.gate.summary
    assert tables(pg) == before  # nothing renamed, nothing dropped


def test_code_reference_refuses_with_file_and_line(tmp_path, pg, dbname):
    orders.create(pg, scale=0.02)
    src = tmp_path / "app"
    src.mkdir()
    (src / "sync.py").write_text("import db\n\nrows = db.query('SELECT * FROM order_list_lines_delta')\n")
    (src / "other.py").write_text("ORDER_LIST_LINES_DELTA_OLD = 1  # a different name\n")
    plan, report, _ = plan_gate_apply(policy(tmp_path, dbname, extra='code_paths = ["app"]'))
    assert not plan.gate.passed and f"{src / 'sync.py'}:3" in plan.gate.summary
    assert "other.py" not in plan.gate.summary
    assert {"ORDER_LIST_DELTA", "ORDER_LIST_LINES_DELTA"} <= tables(pg)


def test_rename_restore_rename_then_drop_after_grace(tmp_path, pg, dbname):
    orders.create(pg, scale=0.02)
    path = policy(tmp_path, dbname)
    today = f"{utcnow():%Y%m%d}"
    renamed = {f"ORDER_LIST_DELTA__retired_{today}", f"ORDER_LIST_LINES_DELTA__retired_{today}"}
    fact_rows = count(pg, '"FACT_ORDER_LIST"')

    plan, report, target = plan_gate_apply(path)
    assert plan.gate.passed and [s.spec["action"] for s in plan.steps] == ["rename", "rename"]
    assert Ledger(pg).undoable([report.run_id]) == {report.run_id}  # status offers its restore
    assert renamed <= tables(pg) and not {"ORDER_LIST_DELTA", "ORDER_LIST_LINES_DELTA"} & tables(pg)

    restore_run(target.engine, report.run_id, tmp_path)  # the gradual disable is undone
    assert {"ORDER_LIST_DELTA", "ORDER_LIST_LINES_DELTA"} <= tables(pg) and not renamed & tables(pg)

    plan, report, _ = plan_gate_apply(path)
    assert renamed <= tables(pg)
    waiting, nothing, _ = plan_gate_apply(path)  # within the grace period: nothing to do yet
    assert waiting.steps == [] and all(p["action"] == "wait" for p in waiting.profile)
    assert renamed <= tables(pg)

    later = utcnow() + timedelta(days=8)
    plan, report, target = plan_gate_apply(path, now=later)
    assert [s.spec["action"] for s in plan.steps] == ["drop", "drop"]
    assert not renamed & tables(pg) and not {"ORDER_LIST_DELTA", "ORDER_LIST_LINES_DELTA"} & tables(pg)
    assert count(pg, '"FACT_ORDER_LIST"') == fact_rows  # the live table is untouched
    assert Ledger(pg).undoable([report.run_id]) == set()  # status offers no restore for a plain drop
    with pytest.raises(BadInput, match="without an archive"):
        restore_run(target.engine, report.run_id, tmp_path)
    with pytest.raises(BadInput, match="already dropped"):
        plan_gate_apply(path)


def test_archived_drop_moves_the_table_and_restores_it(tmp_path, pg, dbname):
    orders.create(pg, scale=0.02)
    with pg.begin() as conn:
        conn.exec_driver_sql("""INSERT INTO "ORDER_LIST_DELTA" VALUES (1, 'AAG-1', 'PENDING', 'INSERT', now())""")
    path = policy(tmp_path, dbname, extra="archive = true")
    plan_gate_apply(path)  # rename, allowed with one row because it is archived
    plan, report, target = plan_gate_apply(path, now=utcnow() + timedelta(days=8))
    assert plan.gate.passed and report.rows == 1
    with pg.connect() as conn:
        moved = set(sa.inspect(conn).get_table_names(schema="dbsweep_archive"))
    today = f"{utcnow():%Y%m%d}"
    assert moved == {f"ORDER_LIST_DELTA__retired_{today}__{report.run_id}",
                     f"ORDER_LIST_LINES_DELTA__retired_{today}__{report.run_id}"}
    restore_run(target.engine, report.run_id, tmp_path)
    assert f"ORDER_LIST_DELTA__retired_{today}" in tables(pg)
    assert count(pg, f'"ORDER_LIST_DELTA__retired_{today}"') == 1
    assert Ledger(pg).run(report.run_id).state == "restored"


def test_cli_dry_run_lists_each_precondition_and_changes_nothing(tmp_path, pg, dbname):
    from tests.conftest import run_cli

    orders.create(pg, scale=0.02)
    with pg.begin() as conn:
        conn.exec_driver_sql('CREATE VIEW lines_view AS SELECT * FROM "ORDER_LIST_LINES_DELTA"')
    path = policy(tmp_path, dbname)
    before = tables(pg)
    dry = run_cli("run", path, "--phase", "retire_delta", "--dry-run")
    assert dry.returncode == 3 and "view lines_view" in dry.stderr  # the gate refuses before the dry run
    with pg.begin() as conn:
        conn.exec_driver_sql("DROP VIEW lines_view")
    dry = run_cli("run", path, "--phase", "retire_delta", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    for check in ("empty (or archived)", "no inbound foreign key", "no dependent view",
                  "no routine or trigger using it"):
        assert f"ORDER_LIST_DELTA: {check}: ok" in dry.stdout
    assert "ORDER_LIST_DELTA: no code reference: not checked: code_paths names no folder" in dry.stdout
    assert "rename" in dry.stdout and tables(pg) == before
