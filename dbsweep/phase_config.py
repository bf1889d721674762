"""The keys every phase kind shares (`PhaseBase`) and the checked value types policy tables use.
Below the kinds: each kind's `Config` extends `PhaseBase`; `dbsweep.policy` loads whole files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from .catalog import split_name
from .durations import parse_duration

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


MAX_NAME = 100  # the ledger keeps names in columns of 100 (env) and 200 (policy, phase) characters


def _plain_name(value: str) -> str:
    if len(value) > MAX_NAME:
        raise ValueError(f"name {value[:20]!r}... is {len(value)} characters long; at most {MAX_NAME}")
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
