"""Policy files (TOML) validated by pydantic, with one clear error line per mistake."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .catalog import split_name
from .durations import parse_duration
from .errors import BadInput
from .files import read_text

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
AFTER_ACTIONS = ("analyze", "vacuum")
ARCHIVE_MODES = ("none", "table", "parquet")


def _one_select(query: str) -> None:
    """A throttle query is one SELECT (it also runs in a read-only transaction)."""
    import sqlglot

    try:
        statements = [s for s in sqlglot.parse(query) if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise ValueError(f"throttle_query is not valid SQL: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1 or not isinstance(statements[0], sqlglot.exp.Select):
        raise ValueError("throttle_query must be one SELECT returning a number")


def _checked_duration(value: str) -> str:
    parse_duration(value)
    return value


def _server_timeout(value: str) -> str:
    if parse_duration(value).total_seconds() * 1000 > MAX_SERVER_TIMEOUT_MS:
        raise ValueError(f"{value!r} is more than the server accepts (at most 24 days)")
    return value


def _some_predicate(value: str) -> str:
    if not value.strip():
        raise ValueError("empty; leave the key out for no filter")
    return value


def _in_phase_schema(value: str, info: ValidationInfo) -> str:
    """A table named without a schema, in a phase with a `schema` key, is in that schema."""
    schema = (info.context or {}).get("schema")
    if not schema or split_name(value)[0] is not None:
        return value
    return f'{_quoted(schema)}.{_quoted(split_name(value)[1])}'


def _quoted(part: str) -> str:
    return '"' + part.replace('"', '""') + '"'


def _plain_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"name {value!r} must be letters, digits, '_' or '-'")
    return value


# PostgreSQL's lock_timeout and statement_timeout are int milliseconds
MAX_SERVER_TIMEOUT_MS = 2_147_483_647
PlainName = Annotated[str, AfterValidator(_plain_name)]  # a policy's, phase's or target's name
Duration = Annotated[str, AfterValidator(_checked_duration)]  # text like "7 days", checked on load
ServerTimeout = Annotated[Duration, AfterValidator(_server_timeout)]
Where = Annotated[str, AfterValidator(_some_predicate)]  # SQL, checked against the catalog at plan time
TableName = Annotated[str, AfterValidator(_in_phase_schema)]  # name, schema.name or SQL-quoted parts


class Strict(BaseModel):
    """Policy tables: unknown keys refused, values of the declared type only (`batch_size = "1000"` or
    `true` is an error, not a silent conversion)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


DEFAULT_BATCH_SIZE = 10_000
# Short enough to stay far under any lock or statement timeout and to let a concurrent writer in
# between batches; long enough that the per-batch round trips cost a few percent of throughput.
DEFAULT_TARGET_BATCH_MS = 100


class Expect(Strict):
    """Gate bounds; each becomes a parameter of the phase kind's GE suite."""

    max_rows: int | None = Field(default=None, ge=0)
    max_fraction: float | None = Field(default=None, ge=0, le=1)
    min_rows: int = Field(default=0, ge=0)


class PhaseBase(Strict):
    """Keys every phase kind shares."""

    name: PlainName
    kind: str
    batch_size: int | None = Field(default=None, ge=1, le=1_000_000)
    target_batch_ms: int | None = Field(default=None, ge=10, le=60_000)
    archive: str = "none"
    schedule: str | None = None
    apply_scheduled: bool = False  # run for real by the policy's [schedules] apply
    after: list[str] = []
    expect: Expect = Expect()
    lock_timeout: ServerTimeout = "2 seconds"
    statement_timeout: ServerTimeout = "60 seconds"
    sleep_ms: int = Field(default=0, ge=0)
    max_runtime: Duration | None = None
    max_replica_lag: Duration | None = None  # pause (after committing) while a replica lags more than this
    max_waiting_sessions: int | None = Field(default=None, ge=0)  # pause while more sessions wait on locks
    max_active_sessions: int | None = Field(default=None, ge=0)  # pause while more sessions run a statement
    throttle_query: str | None = None  # SQL returning one number, run read-only after each batch...
    throttle_max: float | None = None  # ...pause while it is above this
    max_duty: float | None = Field(default=None, gt=0, le=1)  # time in batches over wall time, at most
    progress_every: int | str | None = None  # batches (int) or a duration; default 1000 batches or 10 s
    max_rows: int | None = Field(default=None, ge=1)
    max_plan_age: Duration = "24 hours"
    description: str = ""
    # the schema of the phase's tables named without one (the table keys give names as SQL does)
    table_schema: str | None = Field(default=None, alias="schema")
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    # the archive modes a kind can keep what it changes in, and why it takes no other
    archive_modes: ClassVar[tuple[str, ...]] = ARCHIVE_MODES
    archive_why: ClassVar[str] = ""

    @property
    def base_dir(self) -> Path:
        """The policy file's folder: relative paths in a phase are relative to it."""
        return self._base_dir

    @property
    def start_batch_size(self) -> int:
        return self.batch_size or DEFAULT_BATCH_SIZE

    @property
    def batch_target_ms(self) -> int | None:
        """Neither key set: adapt to DEFAULT_TARGET_BATCH_MS. Only batch_size set: a fixed size."""
        if self.target_batch_ms is not None or self.batch_size is not None:
            return self.target_batch_ms
        return DEFAULT_TARGET_BATCH_MS

    @model_validator(mode="after")
    def _throttle_pair(self):
        if (self.throttle_query is None) != (self.throttle_max is None):
            raise ValueError("give throttle_query and throttle_max together")
        if self.throttle_query is not None:
            _one_select(self.throttle_query)
        return self

    @field_validator("progress_every")
    @classmethod
    def _progress_every(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str):
            parse_duration(value)
        elif isinstance(value, int) and value < 1:
            raise ValueError("progress_every must be a number of batches (at least 1) or a duration")
        return value

    @field_validator("archive")
    @classmethod
    def _archive(cls, value: str) -> str:
        if value not in ARCHIVE_MODES:
            raise ValueError(f"archive {value!r} is not one of {', '.join(ARCHIVE_MODES)}")
        if value not in cls.archive_modes:
            allowed = " or ".join(repr(mode) for mode in cls.archive_modes)
            raise ValueError(f"{cls.archive_why}: archive must be {allowed}")
        return value

    @field_validator("after")
    @classmethod
    def _after(cls, value: list[str]) -> list[str]:
        for action in value:
            if action not in AFTER_ACTIONS:
                raise ValueError(f"unknown after-action {action!r} (expected one of {', '.join(AFTER_ACTIONS)})")
        return value

    def seconds(self, key: str) -> float | None:
        value = getattr(self, key)
        return None if value is None else parse_duration(value).total_seconds()


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
    default_env: str = "dev"
    env: dict[str, EnvConfig]
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
    from .kinds import config_model  # kinds import this module

    path = Path(path)
    text = read_text(path, "policy file")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path}: not valid TOML: {exc}") from None
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
