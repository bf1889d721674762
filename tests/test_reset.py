"""Kind `reset` on seed 001's orders data: ordered rules, first match wins, previous values saved
and restored row for row; the sync engine's own query then picks only the test PO."""

import pytest
import sqlalchemy as sa

from dbsweep.demo import orders
from dbsweep.errors import BadInput
from dbsweep.restore import restore_run
from tests.conftest import ROOT, write_policy
from tests.helpers import plan_and_gate, purge

SYNC = """SELECT count(*) FROM "FACT_ORDER_LIST" WHERE sync_state = 'PENDING' AND action_type IN ('INSERT', 'UPDATE')"""


def orders_policy(tmp_path, dbname, batch_size=700, extra_rule=""):
    body = (ROOT / "policies" / "orders.toml").read_text().split("[[phase]]", 1)[1]
    body = "[[phase]]" + body.replace('kind = "reset"', f'kind = "reset"\nbatch_size = {batch_size}')
    return write_policy(tmp_path, body + extra_rule, dbname, name="orders")


def state(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            'SELECT "id", "AAG ORDER NUMBER", "ORDER_TYPE", sync_state, action_type FROM "FACT_ORDER_LIST" ORDER BY "id"'))]


def expected(row) -> tuple:
    if row[1] == orders.TEST_PO:
        return ("PENDING", "INSERT")
    if row[2] == "CANCELLED":
        return ("EXISTING", "EXISTING")
    return ("COMPLETED", "NONE")


def test_reset_rules_give_the_seeds_outcome_and_restore_gives_back_every_value(tmp_path, pg, dbname):
    orders.create(pg, scale=0.25)
    before = state(pg)
    needing = sum(1 for row in before if (row[3], row[4]) != expected(row))
    plan, report, target = purge(orders_policy(tmp_path, dbname), phase="sync_reset")
    assert [p["rule"] for p in plan.profile] == ["test PO", "cancelled", "everything else"]
    assert plan.profile[0]["rows_matching"] == orders.TEST_PO_LINES
    assert report.rows == needing == plan.rows_selected and report.batches > 3
    after = state(pg)
    assert [r[:3] for r in after] == [r[:3] for r in before]  # nothing but the two columns changed
    assert all((r[3], r[4]) == expected(r) for r in after)  # first match wins, every row
    cancelled_test_lines = [r for r in after if r[1] == orders.TEST_PO and r[2] == "CANCELLED"]
    assert all(r[3] == "PENDING" for r in cancelled_test_lines)
    with pg.connect() as conn:
        assert conn.execute(sa.text(SYNC)).scalar() == orders.TEST_PO_LINES  # only the test PO syncs
        saved = conn.execute(sa.text('SELECT count(*) FROM "FACT_ORDER_LIST__previous"')).scalar()
    assert saved == needing

    from dbsweep import service
    from expectations.runner import verification

    rows = service.verify(target, plan)
    assert verification(plan, rows).passed and rows[-1]["check"].startswith("consumer query")

    result = restore_run(target.engine, report.run_id, tmp_path)
    assert result.rows_restored == needing
    assert state(pg) == before  # every previous value back, row for row


def test_reset_is_idempotent_and_a_second_run_changes_nothing(tmp_path, pg, dbname):
    orders.create(pg, scale=0.1)
    path = orders_policy(tmp_path, dbname)
    purge(path, phase="sync_reset")
    once = state(pg)
    plan, report, _ = purge(path, phase="sync_reset")
    assert plan.rows_selected == 0 and report.rows == 0 and state(pg) == once


def test_gate_refuses_when_the_test_po_is_missing(tmp_path, pg, dbname):
    orders.create(pg, scale=0.1)
    with pg.begin() as conn:
        conn.execute(sa.text('DELETE FROM "FACT_ORDER_LIST" WHERE "AAG ORDER NUMBER" = :po'), {"po": orders.TEST_PO})
    before = state(pg)
    policy, target, plan = plan_and_gate(orders_policy(tmp_path, dbname), phase="sync_reset")
    assert not plan.gate.passed and "min_rows" in plan.gate.summary
    assert state(pg) == before


@pytest.mark.parametrize("rule, message", [
    ('match = { column = "NOPE", equals = "x" }\nset = { sync_state = "X" }', "column 'NOPE' not found"),
    ('match = { column = "ORDER_TYPE", equals = "x", in = ["y"] }\nset = { sync_state = "X" }', "exactly one of"),
    ('match = "otherwise"\nset = {}', "at least one column"),
])
def test_bad_rules_are_refused_with_one_line(tmp_path, pg, dbname, rule, message):
    orders.create(pg, scale=0.05)
    path = orders_policy(tmp_path, dbname)
    text = path.read_text().replace('[[phase.rules]]\nname = "test PO"', f'[[phase.rules]]\n{rule}\n\n[[phase.rules]]\nname = "test PO"')
    path.write_text(text)
    with pytest.raises(BadInput, match=message) as refused:
        plan_and_gate(path, phase="sync_reset")
    assert "\n" not in str(refused.value)
