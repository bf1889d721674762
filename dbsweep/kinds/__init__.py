"""Phase kinds: one module each, each defining one `Kind` subclass (see `base.py` for the
interface). Importing a kind's module registers it; this list is the registry's only entry point."""

from __future__ import annotations

from importlib import import_module

from ..errors import BadInput
from .base import DryRunLine, Kind, kind_named

MODULES = ("retention", "cascade", "reset", "retire", "dedupe", "merge")


def _register() -> None:
    for name in MODULES:
        import_module(f"{__name__}.{name}")


def all_kinds() -> dict[str, Kind]:
    _register()
    return dict(Kind.registry)


def config_model(kind: str | None, where: str):
    if kind is None:
        raise BadInput(f"{where}: missing key 'kind'")
    try:
        return kind_named(kind).Config
    except BadInput as exc:
        raise BadInput(f"{where}: key 'kind': {exc}") from None


__all__ = ["DryRunLine", "Kind", "all_kinds", "config_model", "kind_named"]
