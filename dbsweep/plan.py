"""The frozen plan: cutoff, selection and volumes fixed at plan time (the seeds' cutoff report).
Execute and resume read it; they never compute a new now()."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import BadInput
from .files import read_text

PLAN_FORMAT = 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime) -> datetime:
    """A moment without a time zone is taken to be UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class Frozen(BaseModel):
    """Plan parts read back from files and ledgers: a key dbsweep did not write is refused."""

    model_config = ConfigDict(extra="forbid")


class GateVerdict(Frozen):
    passed: bool
    checked_at: datetime
    summary: str
    results: list[dict[str, Any]] = []
    report: str | None = None  # the Great Expectations Data Docs page of this validation


class Step(Frozen):
    """One table's share of a phase, walked in batches."""

    table: str
    walk: str  # "key": key-set over `key`; "block": PostgreSQL heap-block ranges (no key)
    key: list[str] = []
    first_key: list | None = None
    last_key: list | None = None
    blocks: int | None = None
    rows_selected: int
    batch_size: int
    spec: dict[str, Any] = {}  # what the kind needs to rebuild the selection exactly


class PhasePlan(Frozen):
    plan_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    policy: str
    phase: str
    kind: str
    env: str
    created_at: datetime = Field(default_factory=utcnow)
    phase_fingerprint: str
    cutoff: datetime | None = None
    steps: list[Step]
    profile: list[dict[str, Any]]
    histogram: dict[str, int] = {}
    expect: dict[str, Any] = {}
    checks: list[dict[str, Any]] = []  # catalog preconditions (retire); the gate runs on them
    gate: GateVerdict | None = None

    @property
    def rows_selected(self) -> int:
        return sum(step.rows_selected for step in self.steps)

    def body(self) -> str:
        """The plan as the ledger stores it: everything but the gate's verdict."""
        return self.model_dump_json(exclude={"gate"})

    def differences(self, other: PhasePlan) -> list[str]:
        """The fields (dotted paths) in which two plans differ, the gate's verdict aside."""
        return _differences(json.loads(self.body()), json.loads(other.body()), "")


def body_hash(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def _differences(mine: Any, theirs: Any, path: str) -> list[str]:
    if isinstance(mine, dict) and isinstance(theirs, dict):
        return [found for key in sorted(set(mine) | set(theirs), key=str)
                for found in _differences(mine.get(key), theirs.get(key), f"{path}.{key}" if path else str(key))]
    if isinstance(mine, list) and isinstance(theirs, list):
        if len(mine) != len(theirs):
            return [f"{path or 'plan'} ({len(mine)} items, not {len(theirs)})"]
        return [found for i, (a, b) in enumerate(zip(mine, theirs)) for found in _differences(a, b, f"{path}[{i}]")]
    return [] if mine == theirs else [path or "plan"]


class PlanFile(Frozen):
    format: int = PLAN_FORMAT
    policy: str
    env: str
    created_at: datetime = Field(default_factory=utcnow)
    phases: list[PhasePlan]

    def phase(self, name: str) -> PhasePlan:
        for plan in self.phases:
            if plan.phase == name:
                return plan
        raise BadInput(f"the plan file has no phase {name!r} (it has: {', '.join(p.phase for p in self.phases)})")

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> PlanFile:
        text = read_text(path, "plan file")
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, TypeError) as exc:
            raise BadInput(f"{path}: not a dbsweep plan file ({str(exc).splitlines()[0]})") from None
