"""Resolve a policy environment to a live database connection, keeping passwords out of sight."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import quote

import sqlalchemy as sa

from .errors import BadInput, DbsweepError
from .policy import Policy
from .redact import redact, scheme_only

_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg", "mssql": "mssql+pymssql"}


@dataclass
class Target:
    policy: str
    env: str
    protected: bool
    engine: sa.Engine
    embedded: bool = False

    @property
    def display_url(self) -> str:
        return display_url(self.engine.url, self.embedded)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name


def choose_env(policy: Policy, env: str | None) -> str:
    chosen = env or os.environ.get("DBSWEEP_ENV") or policy.database.default_env
    if chosen not in policy.database.env:
        raise BadInput(f"{policy.path}: no environment {chosen!r} (environments: {', '.join(policy.database.env)})")
    return chosen


def display_url(url: sa.URL, embedded: bool = False) -> str:
    """A URL fit to print: no password, in the authority or in the query."""
    if embedded:
        return f"embedded (database {url.database})"
    return redact(url.render_as_string(hide_password=True))


def parse_url(raw: str) -> sa.URL:
    """sa.make_url, also for a password written with a raw '@' (split at the authority's last '@',
    as libpq does) or a space; a value that is no URL at all is refused showing only its scheme."""
    scheme, sep, rest = raw.partition("://")
    if sep:
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        userinfo, at, host = authority.rpartition("@")
        if at and ("@" in userinfo or " " in userinfo):
            user, colon, password = userinfo.partition(":")
            fixed = quote(user, safe="") + (":" + quote(password, safe="") if colon else "")
            raw = f"{scheme}://{fixed}@{host}{rest[len(authority):]}"
    try:
        return sa.make_url(raw)
    except Exception:
        raise BadInput(f"not a database URL (shown only as {scheme_only(raw)})") from None


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
        url = parse_url(raw)
    except BadInput as exc:
        raise BadInput(f"{policy.path}: env {env!r}: {exc}") from None
    if url.drivername in _DRIVERS:
        url = url.set(drivername=_DRIVERS[url.drivername])
    return url


def connect(policy: Policy, env: str | None = None) -> Target:
    chosen = choose_env(policy, env)
    url = resolve_url(policy, chosen)
    embedded = policy.database.env[chosen].url == "embedded"
    try:
        engine = sa.create_engine(url, pool_pre_ping=True)
        with engine.connect():
            pass
    except Exception as exc:  # the driver's message may echo the URL
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise DbsweepError(f"{policy.path}: env {chosen!r}: cannot connect to {display_url(url, embedded)}: "
                           f"{redact(first[0] if first else type(exc).__name__)}") from None
    return Target(policy=policy.name, env=chosen, protected=policy.database.env[chosen].protected, engine=engine,
                  embedded=embedded)
