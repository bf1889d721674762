"""Reading a file a user names (a policy, a plan): every way it can be unreadable is one line; and
writing dbsweep's own files so that readers never see half of one."""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from .errors import BadInput


MAX_INPUT_BYTES = 16 * 1024 * 1024  # far above any policy or plan; a bigger file is not one


def read_text(path: str | Path, what: str) -> str:
    """The file's UTF-8 text; `what` names it in the error ("policy file", "plan file"). Only a
    regular file of a sane size is read: a device (/dev/zero) or a FIFO is never opened."""
    try:
        if Path(path).exists() and not Path(path).is_file() and not Path(path).is_dir():
            raise BadInput(f"{path}: not a regular file, so not a {what}")
        with open(path, "rb") as source:
            data = source.read(MAX_INPUT_BYTES + 1)
        if len(data) > MAX_INPUT_BYTES:
            raise BadInput(f"{path}: larger than {MAX_INPUT_BYTES // (1024 * 1024)} MB, so not a {what}")
        return data.decode("utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory, not a {what}") from None
    except PermissionError:
        raise BadInput(f"{path}: {what} not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not a {what} (not UTF-8 text)") from None


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` whole: the text goes to a file beside it, flushed, then renamed over it, so a
    reader in another process sees the old file or the new one, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(partial, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


@contextmanager
def exclusively(path: Path):
    """Hold an exclusive lock on `<path>.lock` (processes and threads alike) for a read-modify-write
    of `path` that others may be doing at the same moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _THREADS, open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_THREADS = threading.Lock()  # flock excludes other open files, threading the threads of this process


OWNER_ONLY = 0o077


def owner_only() -> None:
    """Every file this process writes from now on is its owner's alone (0600, folders 0700), whatever
    the umask it was started with: archives of deleted production rows, plans, logs and reports
    are as private as PostgreSQL keeps its data directory."""
    os.umask(OWNER_ONLY)

