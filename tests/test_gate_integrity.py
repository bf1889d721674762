"""What runs is what the gate approved: the ledger's copy of the plan, never an edited file or row."""

import json
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from dbsweep.errors import BadInput
from dbsweep.kinds import retention
from dbsweep.plan import Step
from tests.conftest import checksums, count, ids, load_events, retention_policy, run_cli

NEW = "created_at >= now() - interval '7 days'"


def _tamper(body: dict, edit) -> dict:
    edited = json.loads(json.dumps(body))
    edit(edited["phases"][0])
    return edited


def _set_spec(key, value):
    def edit(phase):
        phase["steps"][0]["spec"][key] = value
    return edit


def _yesterday(phase):
    phase["steps"][0]["spec"]["cutoff"] = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()


def _other_table(phase):
    phase["steps"][0]["table"] = "public.bystanders"


def _wider_keys(phase):
    phase["steps"][0]["first_key"], phase["steps"][0]["last_key"] = [1], [10**9]


def _older(phase):
    phase["created_at"] = "2020-01-01T00:00:00Z"


def _step_added(phase):
    phase["steps"].append({**phase["steps"][0], "table": "public.bystanders"})


def _steps_removed(phase):
    phase["steps"] = []


TAMPERING = {
    "where true": (_set_spec("where", "true"), "steps[0].spec.where"),
    "where injection": (_set_spec("where", "(SELECT pg_terminate_backend(1)) IS NOT NULL"), "steps[0].spec.where"),
    "cutoff moved": (_yesterday, "steps[0].spec.cutoff"),
    "table changed": (_other_table, "steps[0].table"),
    "key range widened": (_wider_keys, "steps[0].first_key"),
    "created_at edited": (_older, "created_at"),
    "step added": (_step_added, "steps (2 items, not 1)"),
    "steps removed": (_steps_removed, "steps (0 items, not 1)"),
}


def test_an_edited_plan_file_is_refused_and_the_ledgers_plan_runs(tmp_path, pg, dbname):
    load_events(pg, old=6000, new=4000)
    load_events(pg, old=500, new=500, table="bystanders")
    keep = ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname)
    plan_file = tmp_path / "plan.json"
    assert run_cli("plan", path, "-o", plan_file).returncode == 0
    original = json.loads(plan_file.read_text())
    before = checksums(pg)
    for label, (edit, field) in TAMPERING.items():
        plan_file.write_text(json.dumps(_tamper(original, edit)))
        result = run_cli("run", path, "--plan", plan_file)
        assert result.returncode == 3, (label, result.stderr)
        assert "differs from the one its gate judged" in result.stderr and field in result.stderr, (label, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (label, result.stderr)
        assert checksums(pg) == before, label
    plan_file.write_text(json.dumps(original))  # the untouched file runs, exactly as judged
    result = run_cli("run", path, "--plan", plan_file)
    assert result.returncode == 0, result.stderr
    assert ids(pg, "events") == keep and count(pg, "bystanders") == 1000


def test_a_plan_file_with_a_key_dbsweep_never_writes_is_not_a_plan(tmp_path, pg, dbname):
    load_events(pg, old=100, new=100)
    path = retention_policy(tmp_path, dbname)
    plan_file = tmp_path / "plan.json"
    assert run_cli("plan", path, "-o", plan_file).returncode == 0
    body = json.loads(plan_file.read_text())
    body["phases"][0]["steps"][0]["delete_everything"] = True
    plan_file.write_text(json.dumps(body))
    result = run_cli("run", path, "--plan", plan_file)
    assert result.returncode == 2 and "not a dbsweep plan file" in result.stderr and count(pg, "events") == 200


def test_a_ledger_row_edited_after_its_gate_never_runs_nor_resumes(tmp_path, pg, dbname):
    load_events(pg, old=2000, new=1000)
    path = retention_policy(tmp_path, dbname, batch_size=200)
    plan_file = tmp_path / "plan.json"
    assert run_cli("plan", path, "-o", plan_file).returncode == 0
    assert run_cli("run", path, "--plan", plan_file, "--max-rows", "400").returncode == 4  # an unfinished run
    plan_id = json.loads(plan_file.read_text())["phases"][0]["plan_id"]
    with pg.begin() as conn:  # the stored selection widened after the gate passed
        conn.execute(sa.text("UPDATE dbsweep.plans SET body = replace(body, :old, :new) WHERE plan_id = :p"),
                     {"old": '"where":null', "new": '"where":"true"', "p": plan_id})
    before = checksums(pg)
    for args in (("--plan", plan_file), ("--phase", "purge")):  # the file, and the resume of its run
        result = run_cli("run", path, *args)
        assert result.returncode == 3 and "changed after its gate ran" in result.stderr, result.stderr
        assert checksums(pg) == before


def test_a_stored_where_is_checked_again_when_the_selection_is_rebuilt(pg):
    """Defence in depth: even a plan that got past every other check cannot bring SQL of its own."""
    load_events(pg, old=10, new=10)
    with pg.connect() as conn:
        table = sa.Table("events", sa.MetaData(), autoload_with=conn)
    spec = {"time_column": "created_at", "cutoff": datetime.now(timezone.utc).isoformat(), "keep": [],
            "where_dialect": "postgresql"}
    for where in ("(SELECT pg_terminate_backend(1)) IS NOT NULL", "pg_sleep(10) IS NULL", "nosuchcolumn = 1",
                  "1 = 1; DROP TABLE events"):
        step = Step(table="public.events", walk="key", rows_selected=0, batch_size=1, spec={**spec, "where": where})
        with pytest.raises(BadInput):
            retention.selection(table, step)
    fine = Step(table="public.events", walk="key", rows_selected=0, batch_size=1, spec={**spec, "where": "id > 5"})
    with pg.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table).where(retention.selection(table, fine))).scalar() == 15
