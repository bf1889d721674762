"""A password never appears in output, plan files, the ledger or Dagster metadata, in any URL form."""

import json

import dagster as dg
import pytest
import sqlalchemy as sa

from dbsweep.embedded import embedded_url
from pipelines.definitions import build_definitions
from tests.conftest import load_events, retention_policy, run_cli

PASSWORD = "Sup3r@S3cr3t Pw"
FRAGMENTS = ("Sup3r", "S3cr3t", "Sup3r%40", "S3cr3t%20")


def _forms(dbname: str) -> dict[str, str]:
    socket = embedded_url(dbname).query["host"]
    return {
        "user:pass@ (encoded)": f"postgresql://app:Sup3r%40S3cr3t%20Pw@/{dbname}?host={socket}",
        "password in the query": f"postgresql://app@/{dbname}?host={socket}&password=Sup3r%40S3cr3t%20Pw",
        "raw @ and space in the password": f"postgresql://app:{PASSWORD}@/{dbname}?host={socket}",
    }


def _ledger_text(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return "\n".join(str(row) for table in ("plans", "runs", "batches")
                         for row in conn.execute(sa.text(f"SELECT * FROM dbsweep.{table}")))


def _leaks(text: str) -> list[str]:
    return [fragment for fragment in FRAGMENTS if fragment in text]


@pytest.fixture
def app_role(pg):
    with pg.begin() as conn:
        conn.exec_driver_sql("DO $$ BEGIN CREATE ROLE app LOGIN SUPERUSER; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        conn.exec_driver_sql(f"ALTER ROLE app PASSWORD '{PASSWORD}'")
    return "app"


@pytest.mark.parametrize("form", ["user:pass@ (encoded)", "password in the query", "raw @ and space in the password"])
def test_no_password_in_any_output(tmp_path, pg, dbname, app_role, form):
    load_events(pg, old=300, new=200)
    url = _forms(dbname)[form]
    path = retention_policy(tmp_path, dbname, env_block='env.dev = { url_env = "DBSWEEP_TEST_URL" }')
    env = {"DBSWEEP_TEST_URL": url}
    plan_file = tmp_path / "plan.json"
    outputs = []
    for args in (("plan", path, "-o", plan_file), ("run", path, "--plan", plan_file), ("status", path),
                 ("health", path), ("verify", path)):
        result = run_cli(*args, env=env)
        assert result.returncode in (0, 1), (args, result.stderr)
        outputs.append(result.stdout + result.stderr)
    assert "app:***@" in outputs[0] or "password=***" in outputs[0] or "app@" in outputs[0]
    everything = "\n".join(outputs) + plan_file.read_text() + _ledger_text(pg)
    assert _leaks(everything) == [], form

    import os
    os.environ["DBSWEEP_TEST_URL"] = url
    try:
        defs = build_definitions(str(tmp_path))
        result = dg.materialize(list(defs.assets) + list(defs.asset_checks), resources=defs.resources,
                                selection=dg.AssetSelection.groups("testpol_purge"),
                                instance=dg.DagsterInstance.ephemeral())
    finally:
        del os.environ["DBSWEEP_TEST_URL"]
    metadata = [json.dumps({k: str(v) for k, v in event.materialization.metadata.items()})
                for event in result.get_asset_materialization_events()]
    assert metadata and _leaks("\n".join(metadata)) == []
    assert "target" in metadata[0]


def test_a_value_that_is_no_url_shows_nothing_but_its_scheme(tmp_path, dbname):
    path = retention_policy(tmp_path, dbname, env_block='env.dev = { url_env = "DBSWEEP_TEST_URL" }')
    for raw in (f"host=/tmp dbname=x password={PASSWORD}", f"postgresql://app:{PASSWORD}@host:notaport/db"):
        result = run_cli("plan", path, env={"DBSWEEP_TEST_URL": raw})
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert _leaks(result.stdout + result.stderr) == [] and "not a database URL" in result.stderr


def test_a_connection_error_is_one_line_naming_policy_and_env(tmp_path, dbname):
    path = retention_policy(tmp_path, dbname, env_block='env.dev = { url_env = "DBSWEEP_TEST_URL" }')
    result = run_cli("plan", path, env={"DBSWEEP_TEST_URL": f"postgresql://app:{PASSWORD}@127.0.0.1:1/x"})
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert str(path) in result.stderr and "env 'dev'" in result.stderr and "cannot connect" in result.stderr
    assert _leaks(result.stdout + result.stderr) == []
