"""dev and prod in one policy (seed 001, 19.21): --env, DBSWEEP_ENV and the Dagster resource pick
the target database; switching changes the target and nothing else; prod is protected."""

import json
import uuid

import dagster as dg
import sqlalchemy as sa

from dbsweep.demo import orders
from dbsweep.embedded import embedded_url
from dbsweep.ledger import Ledger
from pipelines.definitions import build_definitions
from resources import DbsweepResource
from tests.conftest import ROOT, run_cli, write_policy
from tests.test_reset import state


def two_envs(tmp_path, dev_db: str):
    prod_db = f"p_{uuid.uuid4().hex[:10]}"
    prod_url = embedded_url(prod_db).render_as_string(hide_password=False)
    body = (ROOT / "policies" / "orders.toml").read_text().split("[[phase]]", 1)[1]
    path = write_policy(tmp_path, "[[phase]]" + body, dev_db, name="orders", env_block=(
        f'env.dev = {{ url = "embedded", database = "{dev_db}" }}\n'
        'env.prod = { url_env = "ORDERS_PROD_URL", protected = true }'))
    return path, sa.create_engine(prod_url), {"ORDERS_PROD_URL": prod_url}


def test_switching_env_changes_the_target_database_and_nothing_else(tmp_path, pg, dbname):
    path, prod, env = two_envs(tmp_path, dbname)
    orders.create(pg, scale=0.05)
    orders.create(prod, scale=0.05)
    dev_before, prod_before = state(pg), state(prod)
    assert dev_before == prod_before

    plans = {}
    for name, args, extra in (("dev", [], {}), ("prod", ["--env", "prod"], env)):
        out = tmp_path / f"{name}.json"
        result = run_cli("plan", path, "--phase", "sync_reset", "-o", out, *args, env=extra)
        assert result.returncode == 0, result.stderr
        plans[name] = out.read_text()
    dev_plan, prod_plan = (json.loads(plans[n])["phases"][0] for n in ("dev", "prod"))
    assert (dev_plan["env"], prod_plan["env"]) == ("dev", "prod")
    for key in ("phase_fingerprint", "steps", "profile", "expect", "kind"):  # the same work, elsewhere
        assert dev_plan[key] == prod_plan[key], key

    refused = run_cli("run", path, "--phase", "sync_reset", env={**env, "DBSWEEP_ENV": "prod"})
    assert refused.returncode == 2 and "--confirm sync_reset" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert state(prod) == prod_before and state(pg) == dev_before

    done = run_cli("run", path, "--phase", "sync_reset", "--confirm", "sync_reset", env={**env, "DBSWEEP_ENV": "prod"})
    assert done.returncode == 0, done.stderr
    assert state(prod) != prod_before and state(pg) == dev_before  # only prod changed
    assert [r.env for r in Ledger(prod).list_runs("orders")] == ["prod"]
    assert Ledger(pg).list_runs("orders") == []

    missing = run_cli("run", path, "--phase", "sync_reset", "--env", "prod")  # ORDERS_PROD_URL unset
    assert missing.returncode == 2 and "ORDERS_PROD_URL is not set" in missing.stderr
    prod.dispose()


def test_dagster_resource_env_picks_the_database(tmp_path, pg, dbname, monkeypatch):
    path, prod, env = two_envs(tmp_path, dbname)
    monkeypatch.setenv("ORDERS_PROD_URL", env["ORDERS_PROD_URL"])
    orders.create(pg, scale=0.05)
    orders.create(prod, scale=0.05)
    dev_before, prod_before = state(pg), state(prod)
    defs = build_definitions(str(tmp_path))
    group = dg.AssetSelection.groups("orders_sync_reset")
    assets = list(defs.assets) + list(defs.asset_checks)
    config = {"ops": {"orders__sync_reset__apply": {"config": {"dry_run": False}}}}
    prod_resource = {"dbsweep": DbsweepResource(policy_dir=str(tmp_path), env="prod")}
    refused = dg.materialize(assets, selection=group, resources=prod_resource, run_config=config, raise_on_error=False)
    assert not refused.success and state(prod) == prod_before
    config["ops"]["orders__sync_reset__apply"]["config"]["confirm"] = "sync_reset"
    done = dg.materialize(assets, selection=group, resources=prod_resource, run_config=config)
    assert done.success and state(prod) != prod_before and state(pg) == dev_before
    prod.dispose()
