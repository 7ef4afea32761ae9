"""Host tests: every IndexedDB failure name maps to the one exception hierarchy."""

from __future__ import annotations

import re

import pytest

from workerbridge import (
    ConstraintError,
    InvalidInputError,
    StorageBlockedError,
    StorageError,
    StorageQuotaError,
    WorkerBridgeError,
)
from workerbridge.storage.idb import _JS, DOM_ERRORS, storage_error

# Every DOMException name the IndexedDB 3.0 spec throws or sets as a request/transaction
# error, plus what Chromium adds (NotReadableError for unreadable blobs/disk data).
IDB_NAMES = [
    "AbortError", "ConstraintError", "DataCloneError", "DataError", "InvalidAccessError",
    "InvalidStateError", "NotFoundError", "QuotaExceededError", "ReadOnlyError",
    "SyntaxError", "TransactionInactiveError", "UnknownError", "VersionError",
    "TimeoutError", "NotReadableError", "SecurityError",
]


@pytest.mark.parametrize("name", IDB_NAMES)
def test_every_indexeddb_name_has_a_mapping(name):
    assert name in DOM_ERRORS, f"{name} has no mapping in _idb.DOM_ERRORS"
    err = storage_error(name, "create")
    assert isinstance(err, WorkerBridgeError)


def test_every_name_the_glue_raises_itself_is_mapped():
    own = set(re.findall(r'name: "(\w+)"', _JS))
    assert own >= {"Blocked", "NotDefined", "KeyPathChanged", "StepFailed",
                   "InvalidStateError"}
    assert own <= set(DOM_ERRORS)


@pytest.mark.parametrize("name, cls", [
    ("QuotaExceededError", StorageQuotaError),
    ("ConstraintError", ConstraintError),
    ("VersionError", StorageBlockedError),
    ("Blocked", StorageBlockedError),
    ("DataCloneError", InvalidInputError),
    ("DataError", InvalidInputError),
    ("TransactionInactiveError", StorageError),
    ("AbortError", StorageError),
    ("UnknownError", StorageError),
])
def test_the_important_mappings(name, cls):
    err = storage_error(name)
    assert type(err) is cls


def test_messages_are_clear_and_say_nothing_was_written():
    assert "not serialisable" in str(storage_error("DataCloneError"))
    err = storage_error("QuotaExceededError", "bulk_create")
    assert str(err).startswith("bulk_create: ") and "nothing of the transaction" in str(err)
    assert "nothing" not in str(storage_error("Blocked", "opening"))


def test_unknown_names_become_storage_errors_naming_them():
    err = storage_error("BrandNewError")
    assert type(err) is StorageError and "BrandNewError" in str(err)


def test_storage_errors_are_oserrors():
    for cls in (StorageError, StorageQuotaError, StorageBlockedError, ConstraintError):
        assert issubclass(cls, OSError)
