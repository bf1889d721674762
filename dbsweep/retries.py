"""Which database errors a batch rides out (rolled back, retried with backoff) and which mean the
database itself went away."""

from __future__ import annotations

import sqlalchemy as sa
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from .archive import RetryBatch
from .redact import redact

# lock_not_available, query_canceled (statement timeout), serialization_failure, deadlock_detected
TRANSIENT_SQLSTATES = {"55P03", "57014", "40001", "40P01"}
# admin_shutdown, crash_shutdown, cannot_connect_now (a restart), and class 08 connection exceptions
UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03"}


def is_unavailable(exc: BaseException) -> bool:
    """The database went away (restart, failover, network): nothing of the batch committed."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if exc.connection_invalidated or sqlstate in UNAVAILABLE_SQLSTATES or (sqlstate or "").startswith("08"):
        return True
    return isinstance(exc, sa.exc.OperationalError) and sqlstate is None  # could not connect at all


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, RetryBatch):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        return is_unavailable(exc) or getattr(exc.orig, "sqlstate", None) in TRANSIENT_SQLSTATES
    return False


def batch_retrying(attempts: int) -> Retrying:
    """Backoff from 0.2 s, doubling: six attempts ride out about 6 s of trouble."""
    return Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.2, max=5),
                    retry=retry_if_exception(is_transient), reraise=True)


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__)
