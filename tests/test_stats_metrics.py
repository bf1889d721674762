"""Statistics from the ledger, and the Prometheus exporter scraped over HTTP for a known table."""

import time
from datetime import datetime, timezone

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from dbsweep.ledger import Ledger
from dbsweep.metrics import serve
from dbsweep.policy import load_policy
from dbsweep.stats import phase_stats
from dbsweep.target import connect
from tests.conftest import count, load_events, retention_policy, run_cli
from tests.helpers import free_port, purge, scrape


def test_stats_match_the_ledger(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=1000)
    path = retention_policy(tmp_path, dbname, batch_size=500)
    assert run_cli("run", path, "--max-rows", "1000").returncode == 4  # stopped: a run that did not succeed
    assert run_cli("run", path).returncode == 0  # resumed to the end: the same run, now finished
    deleted = 4000 - count(pg, "events")
    runs = Ledger(pg).list_runs("testpol", limit=None)
    [stats] = phase_stats(Ledger(pg), "testpol", ["purge"])
    assert stats.runs == len(runs) == 1 and stats.succeeded == 1 and stats.success_rate == 1.0
    assert stats.rows_changed == deleted == runs[0].rows_done
    assert stats.last_success == runs[0].finished_at.astimezone(timezone.utc)
    assert stats.median_seconds > 0 and stats.median_rows_per_s == deleted / stats.median_seconds
    shown = run_cli("stats", path)
    assert shown.returncode == 0 and f"{deleted:,}" in shown.stdout and "100%" in shown.stdout


def test_the_exporter_serves_the_known_table_over_http(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=1000)
    _analyzed(pg)
    path = retention_policy(tmp_path, dbname, batch_size=1000)
    policy = load_policy(path)
    port = free_port()
    server, thread = serve(policy, connect(policy), "127.0.0.1", port, fresh_s=0)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        labels = (("policy", "testpol"), ("table", "events"))
        phase = (("phase", "purge"), ("policy", "testpol"), ("table", "events"))
        unplanned = scrape(url)
        assert ("dbsweep_rows_due", phase) not in unplanned  # nothing counted them yet: no figure, and no scan
        assert run_cli("check", path).returncode == 0  # the consistency check counts them, as a plan does
        before = scrape(url)
        assert before[("dbsweep_table_rows", labels)] == 4000 and before[("dbsweep_table_size_bytes", labels)] > 0
        due = count(pg, "events", "created_at < now() - interval '7 days'")
        assert before[("dbsweep_rows_due", phase)] == due
        assert 0 <= before[("dbsweep_rows_due_age_seconds", phase)] < 3600
        with pg.connect() as conn:
            oldest = conn.execute(sa.text("SELECT min(created_at) FROM events")).scalar()
        age = (datetime.now(timezone.utc) - oldest).total_seconds()
        assert abs(before[("dbsweep_oldest_row_age_seconds", phase)] - age) < 60
        purge(path)
        _analyzed(pg)
        after = scrape(url)
        assert after[("dbsweep_table_rows", labels)] == 4000 - due and after[("dbsweep_rows_due", phase)] == 0
        assert after[("dbsweep_rows_changed_total", (("phase", "purge"), ("policy", "testpol"), ("table", "events")))] == due
        last = after[("dbsweep_last_success_timestamp_seconds", (("phase", "purge"), ("policy", "testpol")))]
        assert abs(last - time.time()) < 120
        assert ("dbsweep_dead_tuples", labels) in after
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_the_stats_asset_carries_the_numbers(tmp_path, pg, dbname):
    import dagster as dg

    from pipelines.definitions import build_definitions

    load_events(pg, old=600, new=400)
    path = retention_policy(tmp_path, dbname, batch_size=200)
    purge(path)
    defs = build_definitions(str(tmp_path))
    result = dg.materialize(list(defs.assets), selection=dg.AssetSelection.assets(dg.AssetKey(["testpol", "stats"])),
                            resources=defs.resources, instance=dg.DagsterInstance.ephemeral())
    metadata = result.asset_materializations_for_node("testpol__stats")[0].metadata
    [stats] = phase_stats(Ledger(pg), "testpol", ["purge"])
    assert metadata["purge/runs"].value == 1 and metadata["purge/success_rate"].value == 1.0
    assert metadata["purge/rows_changed"].value == stats.rows_changed == 1000 - count(pg, "events")
    assert metadata["purge/median_rows_per_s"].value == stats.median_rows_per_s


class _Gateway:
    """A stand-in Pushgateway on 127.0.0.1 that keeps what each push sent (path and body)."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer

        pushes = self.pushes = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                pushes.append((self.command, self.path, self.rfile.read(int(self.headers["Content-Length"])).decode()))
                self.send_response(202)
                self.end_headers()

            do_PUT = do_POST  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"127.0.0.1:{self.server.server_port}"


def test_runs_pushadd_their_figures_and_a_stop_keeps_the_last_success(tmp_path, pg, dbname):
    load_events(pg, old=2000, new=500)
    path = retention_policy(tmp_path, dbname, batch_size=300)
    gateway = _Gateway()
    try:
        env = {"DBSWEEP_PUSHGATEWAY": gateway.url}
        assert run_cli("run", path, "--max-rows", "600", env=env).returncode == 4
        assert run_cli("run", path, env=env).returncode == 0
    finally:
        gateway.server.shutdown()
    (stop_method, stop_path, stopped), (_, done_path, done) = gateway.pushes
    assert stop_method == "POST"  # pushadd: only the metrics pushed are replaced in the group
    assert stop_path == done_path and sorted(stop_path.split("/")[3:]) == sorted(
        ["dbsweep", "policy", "testpol", "phase", "purge"])
    assert "dbsweep_last_stop_timestamp_seconds" in stopped and "dbsweep_last_success" not in stopped
    assert "dbsweep_run_rows 600.0" in stopped
    samples = {s.name: s.value for f in text_string_to_metric_families(done) for s in f.samples}
    assert abs(samples["dbsweep_last_success_timestamp_seconds"] - time.time()) < 120
    assert samples["dbsweep_run_rows"] == 2500 - count(pg, "events") - 600  # the resumed session's own rows


def _analyzed(engine, seconds: float = 120) -> None:
    """The statistics the exporter reads, up to date: ANALYZE until every table's live-row estimate
    is its count (a session that changed a table reports its own counts within seconds)."""
    deadline = time.monotonic() + seconds
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while True:
            conn.exec_driver_sql("ANALYZE")
            conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
            stale = [t for t, live in conn.execute(sa.text(
                "SELECT format('%I.%I', schemaname, relname), n_live_tup FROM pg_stat_user_tables")).all()
                     if conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() != live]
            if not stale:
                return
            assert time.monotonic() < deadline, f"statistics still stale: {stale}"
            time.sleep(0.2)


def test_scraping_writes_nothing_and_concurrent_scrapes_read_once(tmp_path, pg, dbname):
    """A database no run has touched: scrapes create no ledger, no schema, no relation; eight at
    once are one reading of the database."""
    import threading

    from dbsweep.metrics import DbsweepCollector
    from tests.test_inbound_keys import _relations

    load_events(pg, old=300, new=100)
    path = retention_policy(tmp_path, dbname)
    policy = load_policy(path)
    before = _relations(pg)
    with pg.connect() as conn:
        schemas = set(conn.execute(sa.text("SELECT nspname FROM pg_namespace")).scalars())
    collector = DbsweepCollector(policy, connect(policy), fresh_s=60)
    scrapes = [threading.Thread(target=lambda: list(collector.collect())) for _ in range(8)]
    for scrape_thread in scrapes:
        scrape_thread.start()
    for scrape_thread in scrapes:
        scrape_thread.join(60)
    assert collector.readings == 1
    assert _relations(pg) == before
    with pg.connect() as conn:
        assert set(conn.execute(sa.text("SELECT nspname FROM pg_namespace")).scalars()) == schemas

