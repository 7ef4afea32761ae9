"""workerbridge: Python in Pyodide Web Workers, driven from a PyScript page.

    from workerbridge import WorkerBridge
    digest = await WorkerBridge.crypto.hash_file(file, "SHA-256")
"""

from workerbridge.bridge import WorkerBridge
from workerbridge.core.envelope import PROTOCOL_VERSION, Kind, Priority
from workerbridge.core.errors import (
    AuthError,
    CancelledError,
    ConstraintError,
    CorruptDataError,
    IntegrityError,
    InvalidFilterError,
    InvalidInputError,
    InvalidTypeError,
    NetworkError,
    NonceReuseError,
    PackageError,
    PackageNotFoundError,
    ProtocolError,
    QueueFullError,
    RemoteError,
    RequestTimeoutError,
    ShutdownError,
    StorageBlockedError,
    StorageError,
    StorageQuotaError,
    UnconfiguredError,
    UnknownCollectionError,
    UnknownOperationError,
    UnsupportedError,
    VersionMismatchError,
    WorkerBridgeError,
    WorkerCrashedError,
    WorkflowError,
)
from workerbridge.core.shared import (
    ProgressInfo,
    SharedCancellation,
    SharedCounter,
    SharedFlag,
    SharedProgress,
)
from workerbridge.jobs.engine import Job, Jobs, Step, Workflow
from workerbridge.jobs.flow import Flow, workflow
from workerbridge.jobs.graph import Stage
from workerbridge.jobs.outbox import Outbox
from workerbridge.jobs.pipeline import Pipeline
from workerbridge.jobs.policy import Backoff, Fail, Retry
from workerbridge.pool.connection import Connection, ConnectionStats, RetryPolicy
from workerbridge.pool.workerpool import PoolStats, ScaleEvent, WorkerPool
from workerbridge.portable import release, value
from workerbridge.runtime.dispatch import Context, handler

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "AuthError",
    "Backoff",
    "CancelledError",
    "Connection",
    "ConnectionStats",
    "ConstraintError",
    "Context",
    "CorruptDataError",
    "Fail",
    "Flow",
    "IntegrityError",
    "InvalidFilterError",
    "InvalidInputError",
    "InvalidTypeError",
    "Job",
    "Jobs",
    "Kind",
    "NetworkError",
    "NonceReuseError",
    "Outbox",
    "PackageError",
    "PackageNotFoundError",
    "Pipeline",
    "PoolStats",
    "Priority",
    "ProgressInfo",
    "ProtocolError",
    "QueueFullError",
    "RemoteError",
    "RequestTimeoutError",
    "Retry",
    "RetryPolicy",
    "ScaleEvent",
    "SharedCancellation",
    "SharedCounter",
    "SharedFlag",
    "SharedProgress",
    "ShutdownError",
    "Stage",
    "Step",
    "StorageBlockedError",
    "StorageError",
    "StorageQuotaError",
    "UnconfiguredError",
    "UnknownCollectionError",
    "UnknownOperationError",
    "UnsupportedError",
    "VersionMismatchError",
    "WorkerBridge",
    "WorkerBridgeError",
    "WorkerCrashedError",
    "WorkerPool",
    "Workflow",
    "WorkflowError",
    "__version__",
    "handler",
    "release",
    "value",
    "workflow",
]
