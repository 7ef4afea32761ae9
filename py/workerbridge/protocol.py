"""``workerbridge.protocol``, kept for code that imports it: the ``Connection`` now lives
in ``workerbridge.pool.connection``."""

from workerbridge.pool.connection import (
    Connection,
    ConnectionStats,
    ProgressCallback,
    RetryPolicy,
    Transport,
    make_request,
)

__all__ = [
    "Connection",
    "ConnectionStats",
    "ProgressCallback",
    "RetryPolicy",
    "Transport",
    "make_request",
]
