"""Names dbsweep derives from a table's (its archive, previous values, retired copy, their
indexes): always within the database's identifier limit, the same every time for the same table,
and never two tables on one. PostgreSQL cuts identifiers at 63 bytes, SQL Server at 128; the
smaller limit is used everywhere so a policy moves between them unchanged."""

from __future__ import annotations

import hashlib
import re

MAX_IDENTIFIER_BYTES = 63
_HASH = 8


def derived(base: str, suffix: str, limit: int = MAX_IDENTIFIER_BYTES) -> str:
    """`base + suffix`, or, when that is too long, as much of `base` as fits, `_`, eight hex digits
    of base's hash, then `suffix`."""
    name = base + suffix
    if len(name.encode()) <= limit:
        return name
    room = limit - len(suffix.encode()) - _HASH - 1
    stem = base.encode()[:room].decode(errors="ignore")  # never half a multi-byte character
    return f"{stem}_{hashlib.sha256(base.encode()).hexdigest()[:_HASH]}{suffix}"


def stem_for(base: str, suffix_length: int, limit: int = MAX_IDENTIFIER_BYTES) -> str:
    """What `derived` keeps of `base` before a suffix of this many bytes: to find derived names
    again by pattern (a retired copy's date varies)."""
    return derived(base, "x" * suffix_length, limit)[:-suffix_length]


_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
MAX_FILE_STEM = 100


def file_name(name: str, suffix: str) -> str:
    """A file name for a name that comes from outside (a fleet target, a database's own name):
    the name itself when it is plain and short, else its plain characters (at most 100) and eight
    hex digits of its hash, so `../x`, `a/b`, a 300-character name or two names differing only in
    such characters become distinct names in the one folder, never a path elsewhere."""
    if not _SAFE.search(name) and 0 < len(name) <= MAX_FILE_STEM and not name.startswith("."):
        return name + suffix
    stem = _SAFE.sub("_", name)[:MAX_FILE_STEM].lstrip(".") or "_"
    return f"{stem}-{hashlib.sha256(name.encode()).hexdigest()[:_HASH]}{suffix}"

