"""Workers behind one queue: a ``Connection`` per worker (``connection``: request and
response by id, timeouts, progress, cancel), the ``WorkerPool`` (``workerpool``), its
``supervisor`` (boot, READY, heartbeats, restarts, growing and shrinking), its autoscaling
policy (``scaling``), and the transports: a real Web Worker (``webworker``), in-process
(``loopback``) and the page's own thread (``fallback``), chosen by ``factories``.

Depends on ``core`` and ``runtime``. ``workerbridge.pool`` keeps the names it offered
as a module.
"""

from workerbridge.pool.workerpool import (
    PoolStats,
    PoolTransport,
    ScaleEvent,
    Strategy,
    TransportFactory,
    WorkerPool,
)

__all__ = ["PoolStats", "PoolTransport", "ScaleEvent", "Strategy", "TransportFactory",
           "WorkerPool"]
