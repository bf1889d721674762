"""Resolve a policy environment to a live database connection, keeping passwords out of sight."""

from __future__ import annotations

import os
from dataclasses import dataclass

import sqlalchemy as sa

from .errors import BadInput, DbsweepError
from .policy import Policy
from .redact import redact

_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg", "mssql": "mssql+pymssql"}


@dataclass
class Target:
    policy: str
    env: str
    protected: bool
    engine: sa.Engine

    @property
    def display_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name


def choose_env(policy: Policy, env: str | None) -> str:
    chosen = env or os.environ.get("DBSWEEP_ENV") or policy.database.default_env
    if chosen not in policy.database.env:
        raise BadInput(f"{policy.path}: no environment {chosen!r} (environments: {', '.join(policy.database.env)})")
    return chosen


def resolve_url(policy: Policy, env: str) -> sa.URL:
    config = policy.database.env[env]
    raw = config.url
    if config.url_env is not None:
        raw = os.environ.get(config.url_env)
        if not raw:
            raise BadInput(f"{policy.path}: environment variable {config.url_env} is not set (needed by env {env!r})")
    if raw == "embedded":
        from .embedded import embedded_url

        return embedded_url(config.database or policy.database.database_name or policy.name)
    try:
        url = sa.make_url(raw)
    except Exception:
        raise BadInput(f"{policy.path}: env {env!r}: not a database URL: {redact(raw)}") from None
    if url.drivername in _DRIVERS:
        url = url.set(drivername=_DRIVERS[url.drivername])
    return url


def connect(policy: Policy, env: str | None = None) -> Target:
    chosen = choose_env(policy, env)
    url = resolve_url(policy, chosen)
    try:
        engine = sa.create_engine(url, pool_pre_ping=True)
        with engine.connect():
            pass
    except Exception as exc:  # the driver's message may echo the URL
        raise DbsweepError(f"cannot connect to {url.render_as_string(hide_password=True)}: {redact(exc)}") from None
    return Target(policy=policy.name, env=chosen, protected=policy.database.env[chosen].protected, engine=engine)
