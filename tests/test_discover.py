"""`dbsweep discover` on the embedded PostgreSQL: on the seeds' demo databases it proposes the
seeds' own phases unprompted, each draft plans cleanly; on a clean schema it proposes nothing; it
writes nothing; a 10M-row table is sampled, not scanned."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from dbsweep.demo import breezeway, folders, nes, orders, telemetry
from dbsweep.discover import discover
from dbsweep.embedded import embedded_url, recreate_embedded_database
from tests.conftest import checksums, run_cli

SEEDS = {"nes": nes, "breezeway": breezeway, "orders": orders, "folders": folders, "telemetry": telemetry}


@pytest.fixture(scope="module")
def demo_dbs():
    """The five demo databases, loaded once for the module at a fifth of the demo's scale."""
    names = {}
    for seed, module in SEEDS.items():
        name = f"discover_{seed}"
        recreate_embedded_database(name)
        engine = sa.create_engine(embedded_url(name))
        module.create(engine, 0.2)
        engine.dispose()
        names[seed] = name
    yield names
    for name in names.values():
        recreate_embedded_database(name)


def _found(database: str) -> dict:
    done = run_cli("discover", "--database", database, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _drafts(found: dict, kind: str) -> list[dict]:
    return [p for p in found["proposals"] if p["kind"] == kind and p["phase"]]


def test_the_seeds_own_phases_are_proposed_unprompted(demo_dbs):
    nes_found = _found(demo_dbs["nes"])
    pairs = {p["table"]: p["evidence"] for p in nes_found["proposals"] if p["kind"] == "cascade" and "parents" in p["evidence"]}
    assert set(pairs) == {"addresses", "phones", "emails", "notes"}  # seed 000's polymorphic children
    assert pairs["addresses"]["parents"]["49"] == "contacts" and pairs["addresses"]["rows_per_type"]["49"] > 0
    communities = [p for p in _drafts(nes_found, "cascade") if p["table"] == "contacts (object_type_id = 49)"]
    assert communities and {c["table"] for c in communities[0]["phase"]["children"]} >= {"addresses", "phones", "emails", "notes"}
    readings = [p for p in _drafts(nes_found, "retention") if p["table"] == "readings"][0]
    assert readings["phase"]["older_than"] == "2 years" and readings["phase"]["keep_if_referenced_by"] == ["sm_usage.reading_id"]
    dedupes = {p["table"]: p for p in _drafts(_found(demo_dbs["breezeway"]), "dedupe")}
    assert "breezeway.task_tags" not in dedupes and "breezeway.reservation_guests" not in dedupes  # unique / about none
    task = dedupes["breezeway.task_requirements"]
    assert task["phase"]["tables"][0]["natural_key"] == ["task_pk", "requirement_id"]
    assert 800 <= float(task["evidence"]["reduction"].rstrip("x").replace(",", "")) <= 1000  # the seed's 909x
    retire = {p["table"] for p in _drafts(_found(demo_dbs["orders"]), "retire")}
    assert retire == {"ORDER_LIST_DELTA", "ORDER_LIST_LINES_DELTA"}
    merges = _drafts(_found(demo_dbs["folders"]), "merge")
    assert [(m["table"], m["phase"]["group_by"], m["phase"]["where"]) for m in merges] == [
        ("folders", ["application_id"], "parent_id IS NULL")]
    assert merges[0]["evidence"]["groups_with_several_roots"] > 0


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_each_draft_policy_plans_unchanged(demo_dbs, tmp_path, seed):
    path = tmp_path / f"draft_{seed}.toml"
    written = run_cli("discover", "--database", demo_dbs[seed], "--write-policy", path)
    assert written.returncode == 0, written.stderr
    import tomllib

    text = path.read_text()
    parsed = tomllib.loads(text)
    assert "# evidence:" in text and parsed["phase"] and "schedules" not in parsed  # nothing scheduled to apply
    assert not any("schedule" in phase or phase.get("apply_scheduled") for phase in parsed["phase"])
    planned = run_cli("plan", path)
    assert planned.returncode == 0, planned.stdout[-2000:] + planned.stderr


def test_discovery_writes_nothing(demo_dbs):
    engine = sa.create_engine(embedded_url(demo_dbs["nes"]))

    def counters():
        with engine.connect() as conn:
            return (conn.execute(sa.text("SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables "
                                         "ORDER BY relname")).all(),
                    conn.execute(sa.text("SELECT count(*) FROM pg_class")).scalar())

    before, stats_before = checksums(engine), counters()
    assert run_cli("discover", "--database", demo_dbs["nes"]).returncode == 0
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_stat_force_next_flush()"))
    assert checksums(engine) == before and counters() == stats_before  # no row, no counter, no relation
    from dbsweep.dialects import pg_discover

    with engine.connect() as conn, conn.begin(), pg_discover.read_only(conn, 5, 1):  # a write inside is refused
        with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
            conn.execute(sa.text("CREATE TABLE discovered (i int)"))
    assert discover(engine).tables == 9
    engine.dispose()


def test_a_clean_schema_gets_no_proposal(tmp_path, pg, dbname):
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE customers (id bigint PRIMARY KEY, name text, created_at timestamptz NOT NULL)")
        conn.exec_driver_sql("CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers (id), "
                             "store_id int, sku_id int, placed_at timestamptz NOT NULL, UNIQUE (customer_id, store_id, sku_id))")
        conn.exec_driver_sql("INSERT INTO customers SELECT g, 'c' || g, now() - make_interval(hours => g) FROM generate_series(1, 500) g")
        conn.exec_driver_sql("INSERT INTO orders SELECT g, 1 + mod(g, 500), mod(g, 7), g, now() - make_interval(mins => g) "
                             "FROM generate_series(1, 3000) g")
        conn.exec_driver_sql("ANALYZE")
    found = discover(pg)
    assert [p for p in found.proposals if p.phase] == []
    refused = run_cli("discover", "--database", dbname, "--write-policy", tmp_path / "clean.toml")
    assert refused.returncode == 2 and "nothing to propose" in refused.stderr
    assert not (tmp_path / "clean.toml").exists()


def test_a_ten_million_row_table_is_sampled_not_scanned(pg):
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE big (id bigint PRIMARY KEY, device_id int, created_at timestamptz NOT NULL)")
        conn.exec_driver_sql("INSERT INTO big SELECT g, mod(g, 1000), now() - make_interval(secs => g * 8) "
                             "FROM generate_series(1, 10000000) g")
    with pg.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE big")

    def read():
        with pg.connect() as conn:
            conn.execute(sa.text("SELECT pg_stat_force_next_flush()"))
            return conn.execute(sa.text("SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
                                        "FROM pg_stat_user_tables WHERE relname = 'big'")).scalar()

    before = read()
    found = discover(pg)
    tuples = read() - before
    assert tuples < 100_000  # about SAMPLE_ROWS, never 10M
    old = [p for p in found.proposals if p.kind == "retention" and p.table == "big"][0]
    assert old.sure.startswith("sample of") and old.evidence["rows"] > 9_000_000
    # 8 s a row: rows older than 30 days are those past 324,000, about 97% of the table
    assert 9_500_000 < old.evidence["older_than_30_days"] < 9_800_000
