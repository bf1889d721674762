"""The target database as a Dagster resource: which policies, which environment (dev <-> prod)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from dbsweep.files import owner_only
from dbsweep.policy import Policy, load_policy
from dbsweep.target import Target, connect

owner_only()  # the code location writes archives, reports and logs too: its owner's alone


def default_policy_dir() -> str:
    return os.environ.get("DBSWEEP_POLICY_DIR") or str(Path(__file__).resolve().parents[1] / "policies")


@lru_cache(maxsize=None)
def _target(policy_path: str, env: str | None, target: str | None = None) -> Target:
    return connect(load_policy(policy_path), env, target)


class DbsweepResource(dg.ConfigurableResource):
    """Opens the policy's target database. `env` picks the policy environment; unset means
    DBSWEEP_ENV, else the policy's default_env. Protected environments still need `confirm`."""

    policy_dir: str = Field(default_factory=default_policy_dir, description="Folder of policy TOML files.")
    env: Optional[str] = Field(default=None, description="Policy environment, e.g. dev or prod.")

    def policy(self, name: str) -> Policy:
        return load_policy(Path(self.policy_dir) / f"{name}.toml")

    def target(self, policy: Policy, target: str | None = None) -> Target:
        """The env's database, or one target of a fleet env."""
        return _target(str(policy.path), self.env, target)
