"""Which database errors a batch rides out (rolled back, retried with backoff) and which mean the
database itself went away."""

from __future__ import annotations

import sqlalchemy as sa
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from .archive import RetryBatch
from .dialects.errors import UNAVAILABLE, meaning
from .redact import redact

def is_unavailable(exc: BaseException) -> bool:
    """The database went away (restart, failover, network): nothing of the batch committed."""
    return isinstance(exc, sa.exc.DBAPIError) and meaning(exc) == UNAVAILABLE


def is_transient(exc: BaseException) -> bool:
    """Worth a retry: a lock or statement timeout, a deadlock or serialization failure, an outage."""
    return isinstance(exc, RetryBatch) or (isinstance(exc, sa.exc.DBAPIError) and meaning(exc) is not None)


def batch_retrying(attempts: int) -> Retrying:
    """Backoff from 0.2 s, doubling: six attempts ride out about 6 s of trouble."""
    return Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.2, max=5),
                    retry=retry_if_exception(is_transient), reraise=True)


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__)
