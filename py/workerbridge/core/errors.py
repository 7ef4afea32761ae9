"""One exception hierarchy for everything workerbridge raises.

    WorkerBridgeError
    ├── InvalidInputError (ValueError)          bad argument value: unknown algorithm, empty key …
    │   ├── InvalidTypeError (TypeError)        an argument of the wrong type
    │   ├── NonceReuseError                     an AES-GCM key and nonce already used together
    │   ├── CorruptDataError                    compressed input is corrupt or truncated
    │   ├── UnknownCollectionError              storage: no such collection in the schema
    │   └── InvalidFilterError                  storage: a malformed filter or unknown operator
    ├── UnsupportedError                        the browser lacks the engine (brotli …)
    ├── IntegrityError                          data failed authentication or verification
    ├── StorageError (OSError)                  IndexedDB failed or refused the work
    │   ├── StorageQuotaError                   the origin's storage quota is exhausted
    │   ├── StorageBlockedError                 another tab holds an older/newer schema open
    │   └── ConstraintError                     a key or unique index already holds that value
    ├── NetworkError                            no usable answer: refused, timed out, HTTP error
    ├── AuthError (PermissionError)             a fleet gateway refused the token or the origin
    ├── ProtocolError                           a malformed envelope
    │   ├── VersionMismatchError                the other side speaks another protocol version
    │   └── UnknownOperationError               no handler is registered for (channel, op)
    ├── RemoteError                             a handler raised something unexpected
    ├── WorkerCrashedError                      the worker died or failed to boot
    ├── RequestTimeoutError (TimeoutError)      no answer within the request's timeout
    ├── ShutdownError                           the bridge/pool was closed with calls pending
    ├── QueueFullError                          the pool's queue is at its cap
    └── CancelledError (asyncio.CancelledError) cancelled through a `cancel=` token

Errors cross between threads as ERROR envelopes carrying a `code` (the class attribute
below) and a message — never as pickled objects. `error_from_code` maps a code back to the
class on the receiving side; an unknown code becomes `RemoteError`.

Messages never carry payload data: handlers raise these with messages they compose
themselves, and any other exception crosses as its type name only.
"""

from __future__ import annotations

import asyncio


class WorkerBridgeError(Exception):
    """Base of every exception raised by workerbridge."""

    code = "error"


class InvalidInputError(WorkerBridgeError, ValueError):
    """An argument has the right type but a value that cannot be used."""

    code = "invalid_input"


class InvalidTypeError(InvalidInputError, TypeError):
    """An argument has a type the operation does not accept."""

    code = "invalid_type"


class NonceReuseError(InvalidInputError):
    """Encrypting again with a key and nonce already used together (this would void
    AES-GCM's confidentiality and authenticity), refused."""

    code = "nonce_reuse"


class CorruptDataError(InvalidInputError):
    """Compressed input that cannot be decoded: corrupt, truncated, or followed by junk."""

    code = "corrupt_data"


class UnknownCollectionError(InvalidInputError):
    """A storage call names a collection the schema does not declare."""

    code = "unknown_collection"


class InvalidFilterError(InvalidInputError):
    """A storage filter is malformed or uses an unknown operator or field."""

    code = "invalid_filter"


class StorageError(WorkerBridgeError, OSError):
    """IndexedDB failed or refused the work; nothing of the failed transaction was kept."""

    code = "storage"


class StorageQuotaError(StorageError):
    """The origin's storage quota is exhausted (IndexedDB's QuotaExceededError)."""

    code = "storage_quota"


class StorageBlockedError(StorageError):
    """A schema upgrade is blocked by another tab holding the database open, or this
    connection was closed because another tab upgraded it."""

    code = "storage_blocked"


class ConstraintError(StorageError):
    """A record's key, or a unique index, already holds that value."""

    code = "constraint"


class UnconfiguredError(StorageError):
    """The storage worker lacks the page's settings for a database (it restarted); the
    call did not run. The page sends the settings again and retries on its own."""

    code = "unconfigured"


class UnsupportedError(WorkerBridgeError):
    """The operation needs an engine this browser does not provide."""

    code = "unsupported"


class IntegrityError(WorkerBridgeError):
    """Data failed authentication or verification (tampered, truncated, reordered)."""

    code = "integrity"


class NetworkError(WorkerBridgeError):
    """A network request got no usable answer: refused, timed out, or an HTTP error status.

    The message names the failure (``timeout``, ``network error``, ``HTTP 404``), never a
    response body.
    """

    code = "network"


class PackageError(WorkerBridgeError):
    """A worker could not load or install a package (a wheel failed to load, or did not
    match its lock's sha256)."""

    code = "package"


class PackageNotFoundError(PackageError, LookupError):
    """A package a worker was asked for is not in its bundle's lock (or index); the
    message names it and the bundle command that adds it."""

    code = "missing_package"


class WorkflowError(WorkerBridgeError):
    """A code workflow called its steps in another order than when it last ran (it must
    call the same steps in the same order each time it is replayed)."""

    code = "workflow_diverged"


class AuthError(WorkerBridgeError, PermissionError):
    """A fleet gateway refused the connection: a missing or wrong token, or a page origin
    it does not allow (docs/fleet.md)."""

    code = "unauthorized"


class ProtocolError(WorkerBridgeError):
    """A message that does not follow the envelope schema, or speaks another version."""

    code = "protocol"


class VersionMismatchError(ProtocolError):
    """The envelope carries a protocol version this side does not speak."""

    code = "version"


class UnknownOperationError(ProtocolError):
    """No handler is registered for the requested (channel, op)."""

    code = "unknown_op"


class RemoteError(WorkerBridgeError):
    """A handler raised an exception that is not a WorkerBridgeError.

    Only the exception's type name crosses (``remote_type``); its message may contain
    payload data and stays in the worker's console.
    """

    code = "remote"

    def __init__(self, message: str, remote_type: str = "") -> None:
        super().__init__(message)
        self.remote_type = remote_type


class WorkerCrashedError(WorkerBridgeError):
    """The worker running the request died, was terminated, or failed to boot."""

    code = "crashed"


class RequestTimeoutError(WorkerBridgeError, TimeoutError):
    """No answer arrived within the request's timeout."""

    code = "timeout"


class ShutdownError(WorkerBridgeError):
    """The bridge or pool was closed while the request was pending."""

    code = "shutdown"


class QueueFullError(WorkerBridgeError):
    """The pool's queue is at its cap; the request was not accepted."""

    code = "queue_full"


class CancelledError(WorkerBridgeError, asyncio.CancelledError):
    """The request was cancelled through a ``cancel=`` token (``SharedCancellation``).

    A subclass of ``asyncio.CancelledError``, so code that handles task cancellation
    handles this too.
    """

    code = "cancelled"


_BY_CODE: dict[str, type[WorkerBridgeError]] = {
    cls.code: cls
    for cls in (
        WorkerBridgeError,
        InvalidInputError,
        InvalidTypeError,
        NonceReuseError,
        CorruptDataError,
        UnknownCollectionError,
        InvalidFilterError,
        StorageError,
        StorageQuotaError,
        StorageBlockedError,
        ConstraintError,
        UnconfiguredError,
        UnsupportedError,
        IntegrityError,
        NetworkError,
        AuthError,
        PackageError,
        PackageNotFoundError,
        WorkflowError,
        ProtocolError,
        VersionMismatchError,
        UnknownOperationError,
        RemoteError,
        WorkerCrashedError,
        RequestTimeoutError,
        ShutdownError,
        QueueFullError,
        CancelledError,
    )
}


def error_from_code(code: str, message: str, remote_type: str = "") -> WorkerBridgeError:
    """Rebuild the exception an ERROR envelope describes."""
    cls = _BY_CODE.get(code, RemoteError)
    if cls is RemoteError:
        return RemoteError(message, remote_type)
    return cls(message)


def known_codes() -> frozenset[str]:
    return frozenset(_BY_CODE)
