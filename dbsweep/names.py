"""Names dbsweep derives from a table's (its archive, previous values, retired copy, their
indexes): always within the database's identifier limit, the same every time for the same table,
and never two tables on one. PostgreSQL cuts identifiers at 63 bytes, SQL Server at 128; the
smaller limit is used everywhere so a policy moves between them unchanged."""

from __future__ import annotations

import hashlib

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
