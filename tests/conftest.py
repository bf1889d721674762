"""Real databases only: one embedded PostgreSQL for the session, a fresh database per test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def dbsweep_home(tmp_path_factory):
    """One embedded server per test process (each pytest-xdist worker has its own), stopped when
    the session ends; then nothing the session started may still run."""
    home = tmp_path_factory.mktemp("dbsweep_home")
    os.environ["DBSWEEP_HOME"] = str(home)
    os.environ.pop("DBSWEEP_ENV", None)
    # the CLIs the tests start record no Dagster history (its import costs a second or two each);
    # tests/test_cli_history.py turns it on
    os.environ["DBSWEEP_DAGSTER_HISTORY"] = "off"
    os.environ.pop("DAGSTER_HOME", None)
    from dbsweep.embedded import embedded_url, stop_embedded

    embedded_url("postgres")
    yield home
    from tests.warm_cli import stop_warm_cli

    stop_warm_cli()
    stop_embedded()
    left = _left_behind(tmp_path_factory.getbasetemp())
    assert not left, "processes left behind by the tests:\n" + "\n".join(left)


def _left_behind(base: Path, wait_s: float = 60) -> list[str]:
    """This process's children, and any process whose command line names the session's folders
    (servers, CLIs, Dagster), still alive after `wait_s` for them to end."""
    import time

    import psutil

    me = psutil.Process()

    def alive() -> list[psutil.Process]:
        found = {p.pid: p for p in me.children(recursive=True)}
        for proc in psutil.process_iter(["cmdline"]):
            if proc.pid != me.pid and str(base) in " ".join(proc.info["cmdline"] or []):
                found[proc.pid] = proc
        running = []
        for proc in found.values():
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    running.append(proc)
            except psutil.Error:
                pass
        return running

    deadline = time.monotonic() + wait_s
    while (procs := alive()) and time.monotonic() < deadline:
        time.sleep(0.2)
    described = []
    for proc in procs:
        try:
            described.append(f"{proc.pid}: {' '.join(proc.cmdline())[:200]}")
        except psutil.Error:
            pass
    return described


@pytest.fixture
def dbname():
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pg(dbname) -> sa.Engine:
    from dbsweep.embedded import embedded_url

    engine = sa.create_engine(embedded_url(dbname))
    yield engine
    engine.dispose()


def load_events(engine: sa.Engine, old: int, new: int, table: str = "events", key: str = "bigint") -> None:
    """`old` rows 10-20 days old and `new` rows 0-6 days old, ids shuffled against time."""
    pk = {"bigint": "id bigint PRIMARY KEY", "none": "id bigint", "uuid": "id uuid PRIMARY KEY"}[key]
    id_expr = "md5(g::text)::uuid" if key == "uuid" else "g"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} ({pk}, payload text, created_at timestamptz NOT NULL)")
        conn.exec_driver_sql(f"CREATE INDEX ON {table} (created_at)")
        conn.execute(sa.text(f"""
            INSERT INTO {table} (id, payload, created_at)
            SELECT {id_expr}, 'p' || g,
                   CASE WHEN (hashtext(g::text) & 1023) < :old_share
                        THEN now() - interval '10 days' - make_interval(secs => (hashtext(g::text || 'a') & 65535) * 13)
                        ELSE now() - make_interval(secs => (hashtext(g::text || 'b') & 65535) * 7) END
            FROM generate_series(1, :n) g"""), {"n": old + new, "old_share": int(1024 * old / (old + new))})


def count(engine: sa.Engine, table: str, where: str = "true") -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}")).scalar()


def ids(engine: sa.Engine, table: str, where: str = "true") -> set:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.text(f"SELECT id FROM {table} WHERE {where}"))}


def write_policy(tmp_path: Path, body: str, dbname: str, name: str = "testpol", env_block: str | None = None,
                 archive_dir: str | None = None) -> Path:
    env_block = env_block or 'env.dev = { url = "embedded" }'
    archive = f'archive_dir = "{archive_dir}"' if archive_dir else ""
    text = textwrap.dedent(f"""
        [policy]
        name = "{name}"
        {archive}

        [database]
        default_env = "dev"
        database_name = "{dbname}"
        {env_block}
    """) + textwrap.dedent(body)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


RETENTION = """
[[phase]]
name = "purge"
kind = "retention"
table = "{table}"
time_column = "created_at"
older_than = "7 days"
batch_size = {batch_size}
{extra}
"""


def retention_policy(tmp_path, dbname, table="events", batch_size=1000, extra="", **kw) -> Path:
    return write_policy(tmp_path, RETENTION.format(table=table, batch_size=batch_size, extra=extra), dbname, **kw)


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`dbsweep ARGS` as a process of its own (forked from a warm interpreter: tests/warm_cli.py)."""
    full_env = {**os.environ, **(env or {})}
    if not os.environ.get("DBSWEEP_TEST_FRESH_CLI"):
        from tests.warm_cli import warm_cli

        return warm_cli().run([str(a) for a in args], full_env, ROOT, timeout)
    return subprocess.run([sys.executable, "-m", "dbsweep.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


def checksums(engine: sa.Engine) -> dict[str, tuple[int, str]]:
    """Row count and an order-independent md5 of every table outside dbsweep's own schemas: what
    a refused or bad command must leave exactly as it was."""
    with engine.connect() as conn:
        tables = conn.execute(sa.text(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'dbsweep', 'dbsweep_archive')")).scalars().all()
        return {name: tuple(conn.execute(sa.text(
            f"SELECT count(*), coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '') FROM {name} t")).one())
            for name in sorted(tables)}


# SQL Server tier ---------------------------------------------------------------------------------
# Runs whenever DBSWEEP_MSSQL_URL names a SQL Server (or Babelfish, which .ci/run starts) the tests
# may create databases on; otherwise every test of the tier is skipped with one line.
MSSQL_URL_ENV = "DBSWEEP_MSSQL_URL"


def pytest_report_header(config):
    raw = os.environ.get(MSSQL_URL_ENV)
    if not raw:
        return f"SQL Server tier: not run ({MSSQL_URL_ENV} is not set; its tests are deselected)"
    from dbsweep.target import display_url, parse_url

    return f"SQL Server tier: {display_url(parse_url(raw))}"


def pytest_collection_modifyitems(config, items):
    if os.environ.get(MSSQL_URL_ENV):
        return
    tier = [item for item in items if "ms" in getattr(item, "fixturenames", ())]
    if tier:
        config.hook.pytest_deselected(items=tier)
        items[:] = [item for item in items if item not in tier]


@dataclass
class MssqlDatabase:
    name: str
    engine: sa.Engine

    def env_block(self) -> str:
        """A policy env for this database: the server from the environment, never a password in a file."""
        return f'env.dev = {{ url_env = "{MSSQL_URL_ENV}", database = "{self.name}" }}'


@pytest.fixture
def ms(dbname) -> MssqlDatabase:
    """A fresh database on the SQL Server tier's server, dropped afterwards."""
    raw = os.environ[MSSQL_URL_ENV]  # without it, the tier's tests are deselected
    from dbsweep.dialects.mssql import create_engine
    from dbsweep.target import parse_url

    server = create_engine(parse_url(raw).set(drivername="mssql+pymssql"), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {dbname}")
    engine = create_engine(parse_url(raw).set(drivername="mssql+pymssql", database=dbname))
    try:
        yield MssqlDatabase(dbname, engine)
    finally:
        engine.dispose()
        _drop_database(server, dbname)
        server.dispose()


def _drop_database(server: sa.Engine, name: str, wait_s: float = 60) -> None:
    """DROP DATABASE, once the sessions that used it have ended: this process's own engines on it
    (a test that planned in-process) are disposed, and a CLI that exited may leave its session on
    the server for a moment."""
    import gc
    import time

    for engine in [o for o in gc.get_objects() if isinstance(o, sa.Engine)]:
        if engine.url.database == name:
            engine.dispose()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with server.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE {name}")
            return
        except sa.exc.DBAPIError as exc:
            if "in use" not in str(exc.orig) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
