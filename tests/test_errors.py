"""Host unit tests of the exception hierarchy and its code mapping."""

import asyncio
import inspect

import pytest

import workerbridge
from workerbridge.core import errors as _errors
from workerbridge.core.errors import error_from_code, known_codes


def all_error_classes():
    return [c for _, c in inspect.getmembers(_errors, inspect.isclass)
            if issubclass(c, workerbridge.WorkerBridgeError)]


def test_every_error_class_has_a_unique_code_and_maps_back():
    classes = all_error_classes()
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)), "two classes share a code"
    assert set(codes) == known_codes(), "a class is missing from the code table"
    for cls in classes:
        rebuilt = error_from_code(cls.code, "message")
        assert type(rebuilt) is cls
        assert str(rebuilt) == "message"


def test_every_error_is_exported():
    for cls in all_error_classes():
        assert getattr(workerbridge, cls.__name__) is cls


def test_unknown_code_becomes_remote_error():
    err = error_from_code("no-such-code", "boom", "ZeroDivisionError")
    assert type(err) is workerbridge.RemoteError
    assert err.remote_type == "ZeroDivisionError"


def test_builtin_bases():
    assert issubclass(workerbridge.InvalidInputError, ValueError)
    assert issubclass(workerbridge.InvalidTypeError, TypeError)
    assert issubclass(workerbridge.RequestTimeoutError, TimeoutError)
    assert issubclass(workerbridge.CancelledError, asyncio.CancelledError)
    with pytest.raises(asyncio.CancelledError):
        raise workerbridge.CancelledError("x")


def test_public_api_is_explicit():
    assert sorted(workerbridge.__all__) == sorted(set(workerbridge.__all__))
    for name in workerbridge.__all__:
        assert hasattr(workerbridge, name), name
    public = {n for n in dir(workerbridge) if not n.startswith("_")
              and not inspect.ismodule(getattr(workerbridge, n))}
    assert public - set(workerbridge.__all__) == set(), "exported names missing from __all__"
