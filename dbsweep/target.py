"""Resolve a policy environment to a live database connection, keeping passwords out of sight."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import quote

import sqlalchemy as sa

from .dialects import dialect_for
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
    name: str | None = None  # the target's name, in a fleet

    @property
    def display_url(self) -> str:
        shown = display_url(self.engine.url, self.embedded)
        return f"target {self.name}: {shown}" if self.name else shown

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name


def choose_env(policy: Policy, env: str | None) -> str:
    chosen = env or os.environ.get("DBSWEEP_ENV") or policy.database.default_env
    if chosen not in policy.database.env:
        raise BadInput(f"{policy.path}: no environment {chosen!r} (environments: {', '.join(policy.database.env)})")
    return chosen


def is_fleet(policy: Policy, env: str | None = None) -> bool:
    """Whether the env (chosen as choose_env does) is a fleet of databases rather than one."""
    return policy.database.env[choose_env(policy, env)].fleet


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


def _raw_url(policy: Policy, env: str, url: str | None, url_env: str | None) -> str:
    if url_env is not None:
        raw = os.environ.get(url_env)
        if not raw:
            raise BadInput(f"{policy.path}: environment variable {url_env} is not set (needed by env {env!r})")
        return raw
    return url


def _url(policy: Policy, env: str, raw: str, database: str | None) -> sa.URL:
    if raw == "embedded":
        from .embedded import embedded_url

        return embedded_url(database or policy.database.database_name or policy.name)
    try:
        url = parse_url(raw)
    except BadInput as exc:
        raise BadInput(f"{policy.path}: env {env!r}: {exc}") from None
    if url.drivername in _DRIVERS:
        url = url.set(drivername=_DRIVERS[url.drivername])
    return url.set(database=database) if database else url


def resolve_url(policy: Policy, env: str, target: str | None = None) -> sa.URL:
    """The URL of the env's database, or of one target of a fleet env."""
    return _url(policy, env, *_source(policy, env, target))


def _source(policy: Policy, env: str, target: str | None) -> tuple[str, str | None]:
    """Where the database is: the raw URL (or "embedded") of its server, and the database on it
    when the URL does not name it."""
    config = policy.database.env[env]
    if not config.fleet:
        if target is not None:
            raise BadInput(f"{policy.path}: env {env!r} is one database: --target {target} does not apply")
        return _raw_url(policy, env, config.url, config.url_env), config.database
    if target is None:
        raise BadInput(f"{policy.path}: env {env!r} is a fleet of databases: give --target NAME or --all-targets")
    names = target_names(policy, env)
    if target not in names:
        import difflib

        close = difflib.get_close_matches(target, names, n=1)
        raise BadInput(f"{policy.path}: env {env!r} has no target {target!r}"
                       + (f"; did you mean {close[0]!r}?" if close else f" (targets: {', '.join(names) or 'none'})"))
    for spec in config.targets or []:
        if spec.name == target:
            if spec.database is not None:
                return _raw_url(policy, env, config.url, config.url_env), spec.database
            return _raw_url(policy, env, spec.url, spec.url_env), None
    return _raw_url(policy, env, config.url, config.url_env), target  # discovered: the name is the database


def target_names(policy: Policy, env: str | None = None) -> list[str]:
    """The targets of a fleet env: as listed, or the server's databases LIKE the pattern, read now."""
    chosen = choose_env(policy, env)
    config = policy.database.env[chosen]
    if config.targets is not None:
        return [t.name for t in config.targets]
    if config.databases_like is None:
        return []
    server = _url(policy, chosen, _raw_url(policy, chosen, config.url, config.url_env), "postgres"
                  if config.url == "embedded" else None)
    engine = create_engine(server)
    try:
        with engine.connect() as conn:
            return dialect_for(conn).databases_like(conn, config.databases_like)
    except sa.exc.DBAPIError as exc:
        first = str(exc.orig).strip().splitlines()
        raise DbsweepError(f"{policy.path}: env {chosen!r}: cannot list the databases on "
                           f"{display_url(server, config.url == 'embedded')}: {redact(first[0] if first else '')}") from None
    finally:
        engine.dispose()


def create_engine(url: sa.URL, **kw) -> sa.Engine:
    """An engine for a target, set up as its database needs."""
    if url.get_backend_name() == "mssql":
        from .dialects.mssql import create_engine as mssql_engine

        return mssql_engine(url, **kw)
    return sa.create_engine(url, **kw)


def connect(policy: Policy, env: str | None = None, target: str | None = None) -> Target:
    chosen = choose_env(policy, env)
    raw, database = _source(policy, chosen, target)
    url, embedded = _url(policy, chosen, raw, database), raw == "embedded"
    try:
        engine = create_engine(url, pool_pre_ping=True)
        with engine.connect():
            pass
    except Exception as exc:  # the driver's message may echo the URL
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        where = f"env {chosen!r}" + (f", target {target!r}" if target else "")
        raise DbsweepError(f"{policy.path}: {where}: cannot connect to {display_url(url, embedded)}: "
                           f"{redact(first[0] if first else type(exc).__name__)}") from None
    return Target(policy=policy.name, env=chosen, protected=policy.database.env[chosen].protected, engine=engine,
                  embedded=embedded, name=target)
