"""Reading a file a user names (a policy, a plan): every way it can be unreadable is one line."""

from __future__ import annotations

from pathlib import Path

from .errors import BadInput


def read_text(path: str | Path, what: str) -> str:
    """The file's UTF-8 text; `what` names it in the error ("policy file", "plan file")."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory, not a {what}") from None
    except PermissionError:
        raise BadInput(f"{path}: {what} not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not a {what} (not UTF-8 text)") from None
