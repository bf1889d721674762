"""The bundled PostgreSQL (pgserver): a real PostgreSQL 16 started from pip, no server to install."""

from __future__ import annotations

import atexit
import os
import warnings
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa


def dbsweep_home() -> Path:
    """Where dbsweep keeps local state: DBSWEEP_HOME, else ~/.local/share/dbsweep."""
    home = os.environ.get("DBSWEEP_HOME") or Path.home() / ".local" / "share" / "dbsweep"
    path = Path(home).expanduser()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def dagster_home() -> Path:
    """The Dagster instance the CLI records into and `dbsweep ui` shows: DAGSTER_HOME, else
    `$DBSWEEP_HOME/dagster`; one history for both, with nothing to set."""
    home = Path(os.environ.get("DAGSTER_HOME") or dbsweep_home() / "dagster").expanduser()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists():  # Dagster's defaults (it warns without the file); `dbsweep ui` writes its own
        settings.touch()
    return home


@lru_cache(maxsize=None)
def _server(pgdata: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        import pgserver

        _forget_dead_handles(Path(pgdata))
        server = pgserver.get_server(pgdata)
    _readable_by_the_server(Path(pgdata) / ".handle_pids.json")
    # atexit runs last-registered first: the dead are forgotten before pgserver's own exit handler
    # decides whether this process is the last one using the server (then it stops it)
    atexit.register(_forget_dead_handles, Path(pgdata))
    return server


def _readable_by_the_server(path: Path) -> None:
    """pgserver keeps its list of the processes using the server inside the data directory, and
    PostgreSQL (its own user when started by root) must read every file there (pg_basebackup copies
    them all): the list holds process ids only, so it is not kept to dbsweep's owner alone. Later
    writes rewrite the file in place and keep this mode."""
    if path.exists():
        path.chmod(0o644)


def _forget_dead_handles(pgdata: Path) -> None:
    """pgserver stops the server when the last process holding a handle on it exits. A process
    that was killed (SIGKILL, a crash) never gives its handle back, and the server would then run
    for ever: handles of processes that no longer run are dropped."""
    import psutil
    from pgserver.postgres_server import PostgresServer
    from pgserver.utils import DiskList

    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    handles = DiskList(pgdata / ".handle_pids.json")
    with PostgresServer._lock:
        pids = handles.get()
        alive = [pid for pid in pids if running(pid)]
        if alive != pids:
            handles.put(alive)


def stop_embedded() -> None:
    """Give back this process's hold on every embedded server it started, now rather than at exit:
    each stops unless another dbsweep process still uses it (what pgserver's exit handler does)."""
    from pgserver.postgres_server import PostgresServer

    for server in list(PostgresServer._instances.values()):
        _forget_dead_handles(server.pgdata)
        server._cleanup()
    _server.cache_clear()


def embedded_database_exists(database: str) -> bool:
    """Whether the embedded server has `database`, without creating it (discovery writes nothing)."""
    engine = sa.create_engine(embedded_url("postgres"))
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}).first() is not None
    finally:
        engine.dispose()


def recreate_embedded_database(database: str) -> None:
    """Drop `database` in the embedded server (its sessions ended) so the next embedded_url makes it
    anew: demo data never sits beside a ledger, archives or retired copies from earlier data."""
    admin = embedded_url("postgres")
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            quoted = conn.dialect.identifier_preparer.quote(database)
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        engine.dispose()


def embedded_url(database: str) -> sa.URL:
    """Start (or attach to) the embedded server and make sure `database` exists in it."""
    pgdata = dbsweep_home() / "pgdata"
    server = _server(str(pgdata))
    socket_dir = str(pgdata)
    admin = sa.URL.create("postgresql+psycopg", username="postgres", database="postgres", query={"host": socket_dir})
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}).first()
            if not exists:
                quoted = conn.dialect.identifier_preparer.quote(database)
                conn.execute(sa.text(f"CREATE DATABASE {quoted}"))
    finally:
        engine.dispose()
    del server
    return admin.set(database=database)
