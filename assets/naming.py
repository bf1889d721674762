"""Every name a phase's graph shows in Dagster, decided in one place: asset keys, group, pool,
job, the apply op's name (what run config addresses), the schedule, tags."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

DRY_RUN_TAG = "dbsweep/dry_run"


@dataclass(frozen=True)
class PhaseNames:
    policy: str
    phase: str
    kind: str
    variant: str | None = None  # "backfill": the time-window-partitioned graph beside the steady one

    @property
    def prefix(self) -> list[str]:
        return [self.policy, self.phase, *([self.variant] if self.variant else [])]

    @property
    def path(self) -> str:
        return "/".join(self.prefix)

    def key(self, leaf: str) -> dg.AssetKey:
        return dg.AssetKey([*self.prefix, leaf])

    @property
    def group(self) -> str:
        """The phase's graph in the UI; a backfill graph in a group of its own beside it."""
        return "_".join([self.policy, self.phase, *([self.variant] if self.variant else [])]).replace("-", "_")

    @property
    def pool(self) -> str:
        """One database, one pool: its steps queue instead of failing on the phase lock."""
        return f"dbsweep_{self.policy}"

    @property
    def job(self) -> str:
        return "__".join(self.prefix).replace("-", "_")

    @property
    def apply_op(self) -> str:
        return op_name(self.key("apply"))

    @property
    def schedule(self) -> str:
        return f"{self.job}__schedule"

    @property
    def asset_tags(self) -> dict[str, str]:
        return {"dbsweep/kind": self.kind}

    @property
    def job_tags(self) -> dict[str, str]:
        return {"dbsweep/policy": self.policy, "dbsweep/phase": self.phase}


def op_name(key: dg.AssetKey) -> str:
    return "__".join(key.path).replace("-", "_")
