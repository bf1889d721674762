"""Policy files (TOML) validated by pydantic, with one clear error line per mistake."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from .errors import BadInput
from .files import read_text
from .kinds import config_model
from .phase_config import Duration, PlainName, Strict

class FleetTarget(Strict):
    """One database of a fleet: its own `url` or `url_env`, or a `database` on the env's server."""

    name: PlainName
    url: str | None = None
    url_env: str | None = None
    database: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> FleetTarget:
        if sum(v is not None for v in (self.url, self.url_env, self.database)) != 1:
            raise ValueError(f"target {self.name!r}: give exactly one of 'url', 'url_env' or 'database'")
        return self


class EnvConfig(Strict):
    url: str | None = None
    url_env: str | None = None
    protected: bool = False
    database: str | None = None  # with url = "embedded": this env's database in the embedded server
    targets: list[FleetTarget] | None = None  # a fleet: these databases, each with its own ledger
    databases_like: str | None = None  # a fleet: every database of the server whose name is LIKE this

    @model_validator(mode="after")
    def _one_source(self) -> EnvConfig:
        server = (self.url is None) != (self.url_env is None)
        if self.targets is not None and self.databases_like is not None:
            raise ValueError("give 'targets' or 'databases_like', not both")
        if self.targets is not None:
            if not self.targets:
                raise ValueError("targets: empty; leave the key out for one database")
            names = [t.name for t in self.targets]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"targets: {twice[0]!r} is named twice")
            if any(t.database for t in self.targets) and not server:
                raise ValueError("a target with 'database' needs the env's server: give 'url' or 'url_env'")
            if self.url is not None and self.url_env is not None:
                raise ValueError("give at most one of 'url' or 'url_env'")
            return self
        if not server:
            raise ValueError("give exactly one of 'url' or 'url_env'")
        if self.databases_like is not None and self.database is not None:
            raise ValueError("'databases_like' finds the databases: leave 'database' out")
        return self

    @property
    def fleet(self) -> bool:
        return self.targets is not None or self.databases_like is not None


class DatabaseConfig(Strict):
    default_env: PlainName = "dev"
    env: dict[PlainName, EnvConfig]
    database_name: str | None = None  # database created inside the embedded server

    @model_validator(mode="after")
    def _default_exists(self) -> DatabaseConfig:
        if self.default_env not in self.env:
            raise ValueError(f"default_env {self.default_env!r} is not one of the envs: {', '.join(self.env)}")
        return self


Severity = Literal["warn", "error"]


class CountAlert(Strict):
    max: int = Field(ge=0)
    severity: Severity = "warn"


class FractionAlert(Strict):
    max_fraction: float = Field(ge=0, le=1)
    severity: Severity = "warn"


class GraceAlert(Strict):
    grace: Duration
    severity: Severity = "error"


class SeverityOnly(Strict):
    severity: Severity = "error"


class Alerts(Strict):
    """[alerts]: thresholds checked by `dbsweep check`, by the Dagster health asset's checks, and
    delivered to a webhook by Dagster's sensors (seeds 002 and 004)."""

    rows_due: CountAlert | None = None  # rows a phase's rule would change now
    oldest_row: GraceAlert | None = None  # the oldest row older than the retention plus this grace
    dead_tuples: FractionAlert | None = None  # dead tuples over this share of the live ones
    table_bytes: CountAlert | None = None  # a policy table larger than this
    blocked_sessions: CountAlert | None = None  # sessions waiting on a lock, more than this
    run_failed: SeverityOnly | None = None  # a phase's last run failed, stopped early or was refused


_CRON = re.compile(r"^\S+(\s+\S+){4}$")


def _cron(value: str) -> str:
    if not _CRON.match(value.strip()):
        raise ValueError(f"{value!r} is not a cron expression of five fields, e.g. '0 * * * *'")
    return value


Cron = Annotated[str, AfterValidator(_cron)]


class Schedules(Strict):
    """[schedules]: Dagster schedules by purpose (created stopped, like every schedule)."""

    check: Cron | None = None  # every phase's profile and gate, nothing applied (seed 004: hourly)
    apply: Cron | None = None  # the phases marked `apply_scheduled = true`, for real (seed 004: daily)
    integrity: Cron | None = None  # every phase's verification, the health report and stats (weekly)


class PolicyMeta(Strict):
    name: PlainName
    description: str = ""
    archive_dir: str | None = None  # Parquet archives; relative to the policy file


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: Path
    meta: PolicyMeta
    database: DatabaseConfig
    alerts: Alerts = Alerts()
    schedules: Schedules = Schedules()
    phases: list[Any]
    fingerprints: dict[str, str]

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def archive_dir(self) -> Path:
        """Where Parquet archives go: [policy] archive_dir, else $DBSWEEP_HOME/archive/<policy>."""
        if self.meta.archive_dir:
            return (self.path.parent / self.meta.archive_dir).resolve()
        from .embedded import dbsweep_home

        return dbsweep_home() / "archive" / self.name

    def phase(self, name: str):
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise BadInput(f"{self.path}: no phase named {name!r} (phases: {', '.join(p.name for p in self.phases)})")


def _describe(error: dict) -> str:
    loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
    key = ".".join(loc) if loc else "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    if error["type"] == "missing":
        return f"missing key '{key}'"
    message = error["msg"].removeprefix("Value error, ")
    return f"key '{key}': {message}"


def _validate(model: type[BaseModel], raw: Any, where: str) -> BaseModel:
    schema = raw.get("schema") if isinstance(raw, dict) and isinstance(raw.get("schema"), str) else None
    try:
        return model.model_validate(raw, context={"schema": schema})
    except ValidationError as exc:
        raise BadInput(f"{where}: {_describe(exc.errors()[0])}") from None
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None


def fingerprint(raw: dict) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_policy(path: str | Path) -> Policy:

    path = Path(path)
    text = read_text(path, "policy file")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise BadInput(f"{path}: not a policy: arrays or tables nested deeper than TOML parsers go") from None
    extra = set(raw) - {"policy", "database", "phase", "alerts", "schedules"}
    if extra:
        raise BadInput(f"{path}: unknown top-level table '{sorted(extra)[0]}'")
    meta = _validate(PolicyMeta, raw.get("policy", {}), f"{path}: [policy]")
    if meta.name != path.stem:  # Dagster finds a policy by its name: <policy_dir>/<name>.toml
        raise BadInput(f"{path}: [policy] key 'name': {meta.name!r} differs from the file name; "
                       f"name the file {meta.name}.toml or the policy {path.stem!r}")
    database = _validate(DatabaseConfig, raw.get("database", {}), f"{path}: [database]")
    phases, fingerprints = [], {}
    for index, raw_phase in enumerate(raw.get("phase", [])):
        label = raw_phase.get("name", f"#{index + 1}") if isinstance(raw_phase, dict) else f"#{index + 1}"
        where = f"{path}: phase '{label}'"
        model = config_model(raw_phase.get("kind") if isinstance(raw_phase, dict) else None, where)
        phase = _validate(model, raw_phase, where)
        if phase.name in fingerprints:
            raise BadInput(f"{where}: phase name used twice")
        phase._base_dir = path.resolve().parent
        phases.append(phase)
        fingerprints[phase.name] = fingerprint(raw_phase)
    if not phases:
        raise BadInput(f"{path}: no [[phase]] defined")
    alerts = _validate(Alerts, raw.get("alerts", {}), f"{path}: [alerts]")
    schedules = _validate(Schedules, raw.get("schedules", {}), f"{path}: [schedules]")
    return Policy(path=path, meta=meta, database=database, phases=phases, fingerprints=fingerprints, alerts=alerts,
                  schedules=schedules)
